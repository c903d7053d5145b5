//! nginx in front of the GenAI mock provider and of LiteLLM, for the GenAI
//! tests (tests/src/genai.rs re-exports these): configurations and the
//! access log they write.

use crate::nginx::conf_head;
use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// nginx's access log for the GenAI scene, in its directory.
pub const LOG: &str = "genai.log";

/// nginx in directory `d` on 127.0.0.1:`port`, one worker: for each
/// (provider, mock port) of `upstreams`, an upstream block (HTTP/1.1
/// keep-alive) and the locations `/buf/<provider>/` (`proxy_buffering on`)
/// and `/nobuf/<provider>/` (`off`), each proxied to the mock with its
/// prefix stripped, and `/pfx/<provider>/` (`on`), proxied with the path
/// `/<provider>/…` (an API path under a prefix of its own), and
/// `/azure/<provider>/v1/…` (`on`), proxied as Azure OpenAI's paths are,
/// `/openai/deployments/mock/…` without `/v1`; the log format of [`LogLine`]
/// in [`LOG`].
pub fn nginx_conf(d: &str, port: u16, upstreams: &BTreeMap<String, u16>) -> String {
    let mut blocks = String::new();
    let mut locations = String::new();
    for (name, up) in upstreams {
        let _ = write!(
            blocks,
            "    upstream {name} {{\n        server 127.0.0.1:{up};\n        keepalive 8;\n    }}\n"
        );
        for (prefix, buffering, upstream_path) in [
            ("buf", "on", String::new()),
            ("nobuf", "off", String::new()),
            ("pfx", "on", format!("{name}/")),
        ] {
            let _ = write!(
                locations,
                "        location /{prefix}/{name}/ {{
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering {buffering};
            proxy_read_timeout 30s;
            proxy_pass http://{name}/{upstream_path};
        }}
"
            );
        }
    }
    let names: Vec<&str> = upstreams.keys().map(String::as_str).collect();
    // A variable in proxy_pass naming an upstream block needs no resolver.
    let _ = write!(
        locations,
        "        location ~ ^/azure/({})/v1/(.*)$ {{
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering on;
            proxy_read_timeout 30s;
            proxy_pass http://$1/openai/deployments/mock/$2;
        }}
",
        names.join("|")
    );
    // The same, deeper than the kernel's scan for a GenAI path's end
    // (GENAI_PATH_MAX in ebpf/src/genai_mark.rs): a gateway's long route.
    let _ = write!(
        locations,
        "        location ~ ^/deep/({})/v1/(.*)$ {{
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering on;
            proxy_read_timeout 30s;
            proxy_pass http://$1/{DEEP_PREFIX}/openai/deployments/mock/$2;
        }}
",
        names.join("|")
    );
    format!(
        "{head}    log_format genai '$request_uri $status $upstream_addr $upstream_status $request_length $bytes_sent';

{blocks}
    server {{
        listen 127.0.0.1:{port};
        access_log {d}/{LOG} genai;
{locations}    }}
}}
",
        head = conf_head(d, 1)
    )
}

/// A route prefix nginx puts before Azure's paths under `/deep/`: the
/// paths are then over 220 bytes long, and their end beyond the kernel's
/// scan (192 bytes).
pub const DEEP_PREFIX: &str = "tenants/0d9b6c1e-7f5a-4c2b-9e8d-3a1f6b7c8d90/projects/5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170/gateways/eu-west-1/routes/llm-primary-with-a-long-name/providers/azure-openai-production/v2";

/// nginx in front of LiteLLM on `port`: `/llm/v1/…` passed on as `/…`
/// (LiteLLM serves OpenAI's paths without `/v1` too), unbuffered.
pub fn litellm_front_conf(d: &str, port: u16, litellm: u16) -> String {
    format!(
        "{head}    server {{
        listen 127.0.0.1:{port};
        location /llm/v1/ {{
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_read_timeout 60s;
            proxy_pass http://127.0.0.1:{litellm}/;
        }}
    }}
}}
",
        head = conf_head(d, 1)
    )
}

/// One line of [`LOG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub uri: String,
    pub status: u16,
    /// `127.0.0.1:<mock port>`.
    pub upstream_addr: String,
    pub upstream_status: String,
    pub request_length: u64,
    pub bytes_sent: u64,
}

/// The complete lines of [`LOG`] in nginx's directory `dir`.
pub fn read_log(dir: &Path) -> Result<Vec<LogLine>> {
    let text = std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            ensure!(f.len() == 6, "{} fields in {l:?}", f.len());
            Ok(LogLine {
                uri: f[0].to_owned(),
                status: f[1].parse()?,
                upstream_addr: f[2].to_owned(),
                upstream_status: f[3].to_owned(),
                request_length: f[4].parse()?,
                bytes_sent: f[5].parse()?,
            })
        })
        .collect()
}
