//! deploy/kubernetes/gatescope.yaml: valid for Kubernetes by its published
//! schemas, strictly, and the agent it describes runs as described: the
//! container's environment (what a kubelet would give it, down to the node
//! name) discovers a real nginx, counts its traffic, and answers the probes
//! at the path and port the manifest names.
//!
//! deploy/prometheus/genai-rules.yml: valid for Prometheus (`promtool check
//! rules`), its unit tests pass (`promtool test rules`: each alert fires and
//! does not fire), and every family it names is one the agent exports.

use anyhow::{bail, ensure, Context, Result};
use gatescope_tests::accuracy::{sum_by_code, HTTP_REQUESTS};
use gatescope_tests::agent::{gatescope_bin, http_get, SETTLE_TIMEOUT};
use gatescope_tests::metrics::{ACCEPTED, REQUESTS_ALL, TARGET_PROCESSES};
use gatescope_tests::prom::Scrape;
use gatescope_tests::{util, Scene};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `promtool ARGS…` in deploy/prometheus/: its output, or why it failed.
fn promtool(args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .context("running promtool (`cargo xtask setup` installs Debian's prometheus)")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    Ok(text)
}

#[test]
fn genai_rules_pass_promtool() -> Result<()> {
    let text = promtool(&["check", "rules", "genai-rules.yml"])?;
    ensure!(text.contains("SUCCESS: 4 rules found"), "{text}");
    let text = promtool(&["test", "rules", "genai-rules.test.yml"])?;
    ensure!(text.contains("SUCCESS"), "{text}");
    Ok(())
}

/// The rules name families the agent exports (its golden native
/// exposition), so a renamed family cannot leave an alert that never fires.
#[test]
fn genai_rules_name_exported_families() -> Result<()> {
    let rules = std::fs::read_to_string(prometheus_dir().join("genai-rules.yml"))?;
    let golden = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/src/metrics/golden/native.prom"),
    )?;
    // Label names share the families' prefix.
    const LABELS: [&str; 5] = [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
    ];
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !(word.starts_with("gen_ai_") || word.starts_with("gatescope_"))
            || LABELS.contains(&word)
        {
            continue;
        }
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(word);
        ensure!(
            golden.contains(&format!("# TYPE {family} ")),
            "genai-rules.yml names {word}, which the agent does not export"
        );
        named += 1;
    }
    ensure!(named >= 5, "only {named} families found in the rules");
    Ok(())
}

fn manifest_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/gatescope.yaml")
}

/// kubernetes-validate (PyPI, installed by `cargo xtask setup`) checks each
/// resource against the API's OpenAPI schemas; `--strict` refuses fields the
/// API does not have. The oldest and the newest minor versions we claim.
#[test]
fn manifest_is_valid_kubernetes() -> Result<()> {
    for version in ["1.29.0", "1.37.0"] {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(manifest_path())
            .output()
            .context("running kubernetes-validate (`cargo xtask setup` installs it)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "Kubernetes {version}:\n{text}");
        for resource in ["namespace/gatescope", "daemonset/gatescope"] {
            ensure!(
                text.contains(&format!("passed for resource {resource}")),
                "Kubernetes {version}, {resource} not validated:\n{text}"
            );
        }
    }
    Ok(())
}

/// The DaemonSet's one container, as a YAML node.
fn container(docs: &[Yaml]) -> Result<&Yaml> {
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .context("no DaemonSet in the manifest")?;
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .context("no containers")?;
    ensure!(containers.len() == 1, "expected one container");
    Ok(&containers[0])
}

/// The container's environment as the kubelet resolves it on node `node`.
fn environment(c: &Yaml, node: &str) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for var in c["env"].as_vec().map(Vec::as_slice).unwrap_or_default() {
        let name = var["name"].as_str().context("env without a name")?;
        let value = match (var["value"].as_str(), &var["valueFrom"]) {
            (Some(v), _) => v.to_owned(),
            (None, from) if from["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName") => {
                node.to_owned()
            }
            _ => bail!("env {name}: neither a value nor spec.nodeName"),
        };
        env.push((name.to_owned(), value));
    }
    Ok(env)
}

/// The port a probe names, by number or by the container port's name.
fn probe_port(c: &Yaml, probe: &str) -> Result<(String, u16)> {
    let get = &c[probe]["httpGet"];
    let path = get["path"]
        .as_str()
        .context("probe without a path")?
        .to_owned();
    let port = match (&get["port"], get["port"].as_str()) {
        (Yaml::Integer(n), _) => *n,
        (_, Some(name)) => c["ports"]
            .as_vec()
            .context("no ports")?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .with_context(|| format!("no container port named {name}"))?,
        _ => bail!("{probe}: no port"),
    };
    Ok((path, u16::try_from(port)?))
}

/// Processes whose command name is `comm`, from /proc.
fn processes_named(comm: &str) -> usize {
    std::fs::read_dir("/proc").map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
            })
            .count()
    })
}

#[test]
fn manifest_environment_runs_the_agent() -> Result<()> {
    const REQUESTS: usize = 7;
    let text = std::fs::read_to_string(manifest_path())?;
    let docs = YamlLoader::load_from_str(&text).context("parsing the manifest")?;
    let c = container(&docs)?;
    ensure!(
        c["args"].is_badvalue() && c["command"].is_badvalue(),
        "the image's entrypoint runs the agent; flags come from the environment"
    );
    let env = environment(c, "node-under-test")?;
    let (ready_path, ready_port) = probe_port(c, "readinessProbe")?;
    ensure!(probe_port(c, "livenessProbe")? == (ready_path.clone(), ready_port));

    let scene = Scene::start(2)?;
    let dir = util::TempDir::new("deploy")?;
    let mut agent = Command::new(gatescope_bin()?);
    // Only the manifest's settings: none of ours leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("GATESCOPE_") {
            agent.env_remove(key);
        }
    }
    let mut agent = agent
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
        .spawn()?;
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let addr = format!("127.0.0.1:{ready_port}");
    let result = (|| -> Result<()> {
        util::poll(Duration::from_secs(10), "the readiness probe", || {
            if let Some(st) = agent.try_wait()? {
                bail!("gatescope exited ({st}):\n{}", stderr());
            }
            Ok(matches!(http_get(&addr, &ready_path), Ok((200, _))).then_some(()))
        })?;
        // Discovery found the gateway: every nginx process here is a target.
        let nginx = processes_named("nginx");
        ensure!(nginx >= 3, "{nginx} nginx processes");
        let base = util::poll(SETTLE_TIMEOUT, "the targets", || {
            let s = Scrape::parse(&http_get(&addr, "/metrics")?.1)?;
            Ok((s.require(TARGET_PROCESSES, &[])? == nginx as f64).then_some(s))
        })
        .with_context(stderr)?;
        let mut client = scene.client();
        for _ in 0..REQUESTS {
            client.one_shot("/size/100")?;
        }
        // The client's own counts: one connection per request, each answered 200.
        let t = client.totals();
        ensure!(
            t.requests == REQUESTS as u64 && t.connections == REQUESTS as u64,
            "client: {t:?}"
        );
        let ok = |s: &Scrape| {
            sum_by_code(s, HTTP_REQUESTS)
                .get("200")
                .copied()
                .unwrap_or(0.0)
        };
        let want = (
            base.require(ACCEPTED, &[])? + REQUESTS as f64,
            base.get_or_zero(REQUESTS_ALL, &[])? + REQUESTS as f64,
            ok(&base) + REQUESTS as f64,
        );
        let mut got = (0.0, 0.0, 0.0);
        util::poll(SETTLE_TIMEOUT, "the requests to be counted", || {
            let s = Scrape::parse(&http_get(&addr, "/metrics")?.1)?;
            got = (
                s.require(ACCEPTED, &[])?,
                s.get_or_zero(REQUESTS_ALL, &[])?,
                ok(&s),
            );
            Ok((got == want).then_some(()))
        })
        .with_context(|| {
            format!(
                "(accepted, requests, code 200) = {got:?}, want {want:?}\n{}",
                stderr()
            )
        })?;
        Ok(())
    })();
    util::signal(agent.id(), libc::SIGTERM)?;
    let status = agent.wait()?;
    result?;
    ensure!(status.success(), "gatescope exited {status}:\n{}", stderr());
    Ok(())
}
