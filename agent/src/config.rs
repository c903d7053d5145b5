//! The `--config` file (TOML): services and routes.
//!
//! Named as Kong's entities are, so exchanges are labelled by the names an operator
//! already uses.
//!
//! ```toml
//! [[service]]
//! name = "orders"
//! upstream = "127.0.0.1:9000"        # optional; or a list of addresses
//! hosts = ["api.example.com"]        # optional; default for its routes
//!
//!   [[service.route]]
//!   name = "orders-list"
//!   paths = ["/orders"]              # prefixes; none = every path
//!   methods = ["GET"]                # optional
//!   hosts = ["orders.example.com"]   # optional; replaces the service's
//!
//! [[genai.provider]]
//! name = "openai"                    # gen_ai_provider_name
//! upstream = ["127.0.0.1:9000"]      # optional; and/or hosts
//! hosts = ["api.openai.com"]         # optional; the upstream request's Host
//!   [genai.provider.models."gpt-4o"]
//!   input_per_million = 2.5          # price of 1e6 input tokens
//!   output_per_million = 10.0
//! ```
//!
//! Unknown keys are errors (a misspelt `path` must not silently match
//! everything). Every error names the file and says what is wrong, on one
//! line.

use std::{
    collections::{BTreeMap, HashSet},
    fmt, io,
    net::{SocketAddr, ToSocketAddrs},
    path::{Path, PathBuf},
};

use serde::{de, Deserialize, Deserializer};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// GenAI upstreams (issue 13): provider names and prices.
    #[serde(default)]
    pub genai: GenAi,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenAi {
    #[serde(default, rename = "provider")]
    pub providers: Vec<Provider>,
}

/// A GenAI provider: which upstreams are it, and its models' prices.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// `gen_ai_provider_name`.
    pub name: String,
    /// Upstream addresses, as a service's.
    #[serde(default, rename = "upstream", deserialize_with = "one_or_many")]
    pub upstream_specs: Vec<String>,
    /// Resolved from `upstream_specs` by [`Config::parse`].
    #[serde(skip)]
    pub upstreams: Vec<SocketAddr>,
    /// Host patterns matched against the upstream request's Host header
    /// (as a service's hosts).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Prices per model name (as the request names it).
    #[serde(default)]
    pub models: BTreeMap<String, Price>,
}

/// What a model costs, per million tokens, in the operator's currency.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input_per_million: f64,
    #[serde(default)]
    pub output_per_million: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// Upstream addresses (`ip:port`, or `host:port` resolved at start-up):
    /// the gateway's exchanges with them belong to this service.
    #[serde(default, rename = "upstream", deserialize_with = "one_or_many")]
    pub upstream_specs: Vec<String>,
    /// Resolved from `upstream_specs` by [`Config::parse`].
    #[serde(skip)]
    pub upstreams: Vec<SocketAddr>,
    /// Host patterns (`api.example.com`, `*.example.com`, `api.example.*`)
    /// for routes that name none of their own.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    /// Path prefixes, matched as Kong does: plain string prefixes
    /// (`/orders` also matches `/orders/1` and `/orders-old`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Upper-cased by [`Config::parse`].
    #[serde(default)]
    pub methods: Vec<String>,
    /// Lower-cased by [`Config::parse`].
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("config file {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        problem: Problem,
    },
}

/// What is wrong in a config file, on one line.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A value the file may not hold, or TOML that does not parse (toml's own error is a
    /// multi-line snippet; this says where and what).
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: upstream {spec:?} does not resolve")]
    Resolve {
        what: String,
        spec: String,
        #[source]
        source: io::Error,
    },
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Problem::Invalid(message)
    }
}

impl From<&str> for Problem {
    fn from(message: &str) -> Self {
        Problem::Invalid(message.into())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |problem: Problem| ConfigError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            // toml's Display is a multi-line snippet; start-up errors are
            // one line, so say where and what.
            let message = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    invalid(format!("line {line}, column {column}: {message}").into())
                }
                None => invalid(message.into()),
            }
        })?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), Problem> {
        let mut names = HashSet::new();
        let mut upstream_owner: Vec<(SocketAddr, String)> = Vec::new();
        for service in &mut self.services {
            let name = service.name.clone();
            let what = named("service", &name, &mut names)?;
            normalise_hosts(&mut service.hosts, &what)?;
            service.upstreams = claim_upstreams(
                &what,
                "service",
                &name,
                &service.upstream_specs,
                &mut upstream_owner,
            )?;
            let mut route_names = HashSet::new();
            for route in &mut service.routes {
                if route.name.trim().is_empty() {
                    return Err(format!("{what} has a route with an empty name").into());
                }
                if !route_names.insert(route.name.clone()) {
                    return Err(format!("{what}: route {:?} is defined twice", route.name).into());
                }
                let what = format!("{what}, route {:?}", route.name);
                for path in &route.paths {
                    if !path.starts_with('/') {
                        return Err(format!(
                            "{what}: path {path:?} must start with \"/\" (paths are prefixes; regular expressions are not supported)"
                        )
                        .into());
                    }
                }
                for method in &mut route.methods {
                    if method.is_empty() || !method.bytes().all(is_token_byte) {
                        return Err(format!("{what}: {method:?} is not an HTTP method").into());
                    }
                    method.make_ascii_uppercase();
                }
                normalise_hosts(&mut route.hosts, &what)?;
            }
        }
        self.genai.validate()
    }
}

/// Checks a `kind` entry's name (not empty, not seen before) and returns
/// how errors name it (`service "orders"`).
fn named(kind: &str, name: &str, names: &mut HashSet<String>) -> Result<String, Problem> {
    if name.trim().is_empty() {
        return Err(format!("a {kind} has an empty name").into());
    }
    if !names.insert(name.to_owned()) {
        return Err(format!("{kind} {name:?} is defined twice").into());
    }
    Ok(format!("{kind} {name:?}"))
}

/// Resolves `specs` to the addresses entry `name` (a `kind`) owns; an
/// address another entry of the same kind already owns is an error.
fn claim_upstreams(
    what: &str,
    kind: &str,
    name: &str,
    specs: &[String],
    owner: &mut Vec<(SocketAddr, String)>,
) -> Result<Vec<SocketAddr>, Problem> {
    let mut out = Vec::new();
    for spec in specs {
        for addr in resolve(spec, what)? {
            if let Some((_, other)) = owner.iter().find(|(a, _)| *a == addr) {
                if other != name {
                    return Err(format!(
                        "{what}: upstream {addr} already belongs to {kind} {other:?}"
                    )
                    .into());
                }
                continue;
            }
            owner.push((addr, name.to_owned()));
            out.push(addr);
        }
    }
    Ok(out)
}

impl GenAi {
    fn validate(&mut self) -> Result<(), Problem> {
        let mut names = HashSet::new();
        let mut upstream_owner: Vec<(SocketAddr, String)> = Vec::new();
        for provider in &mut self.providers {
            let name = provider.name.clone();
            let what = named("genai.provider", &name, &mut names)?;
            normalise_hosts(&mut provider.hosts, &what)?;
            provider.upstreams = claim_upstreams(
                &what,
                "genai.provider",
                &name,
                &provider.upstream_specs,
                &mut upstream_owner,
            )?;
            for (model, price) in &provider.models {
                if model.trim().is_empty() {
                    return Err(format!("{what} has a model with an empty name").into());
                }
                for (key, value) in [
                    ("input_per_million", price.input_per_million),
                    ("output_per_million", price.output_per_million),
                ] {
                    if !value.is_finite() || value < 0.0 {
                        return Err(format!(
                            "{what}, model {model:?}: {key} = {value} is not a price (a number, 0 or more)"
                        )
                        .into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Lower-cases host patterns and checks their shape: a name or address,
/// optionally with one leading `*.` or one trailing `.*` wildcard.
fn normalise_hosts(hosts: &mut [String], what: &str) -> Result<(), Problem> {
    for host in hosts {
        host.make_ascii_lowercase();
        let bare = host
            .strip_prefix("*.")
            .or_else(|| host.strip_suffix(".*"))
            .unwrap_or(host);
        let ok = !bare.is_empty()
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
        if !ok {
            return Err(format!(
                "{what}: host {host:?} is not a host name (a leading \"*.\" or trailing \".*\" wildcard is allowed)"
            )
            .into());
        }
    }
    Ok(())
}

/// The addresses of service `what`'s upstream `spec`.
fn resolve(spec: &str, what: &str) -> Result<Vec<SocketAddr>, Problem> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if spec
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!(
            "{what}: upstream {spec:?} is not an address with a port (e.g. \"127.0.0.1:9000\")"
        )
        .into());
    }
    let addrs: Vec<SocketAddr> = spec
        .to_socket_addrs()
        .map_err(|source| Problem::Resolve {
            what: what.into(),
            spec: spec.into(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{what}: upstream {spec:?} resolves to no address").into());
    }
    Ok(addrs)
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `upstream = "a:1"` or `upstream = ["a:1", "b:2"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an address string or a list of address strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error as the agent prints it: with its sources.
    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/gatescope.toml"))
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    }

    const GOOD: &str = r#"
[[service]]
name = "orders"
upstream = "127.0.0.1:9000"
hosts = ["API.example.com"]

  [[service.route]]
  name = "orders-list"
  paths = ["/orders"]
  methods = ["get", "HEAD"]

  [[service.route]]
  name = "orders-any"
  paths = ["/orders/", "/o"]
  hosts = ["*.example.com"]

[[service]]
name = "users"
upstream = ["127.0.0.1:9001", "[::1]:9001"]

  [[service.route]]
  name = "everything"
"#;

    #[test]
    fn parses_a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.services.len(), 2);
        let orders = &c.services[0];
        assert_eq!(orders.name, "orders");
        assert_eq!(orders.upstreams, ["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(orders.hosts, ["api.example.com"]);
        assert_eq!(orders.routes[0].methods, ["GET", "HEAD"]);
        assert_eq!(orders.routes[1].paths, ["/orders/", "/o"]);
        assert_eq!(orders.routes[1].hosts, ["*.example.com"]);
        let users = &c.services[1];
        assert_eq!(
            users.upstreams,
            [
                "127.0.0.1:9001".parse::<SocketAddr>().unwrap(),
                "[::1]:9001".parse().unwrap()
            ]
        );
        assert!(users.routes[0].paths.is_empty());
    }

    #[test]
    fn empty_file_is_no_services() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn host_names_resolve() {
        let c = parse("[[service]]\nname = \"s\"\nupstream = \"localhost:9000\"\n").unwrap();
        assert!(!c.services[0].upstreams.is_empty());
        assert!(c.services[0].upstreams.iter().all(|a| a.port() == 9000));
    }

    fn assert_err(text: &str, want: &[&str]) {
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with("config file /etc/gatescope.toml: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
        for w in want {
            assert!(err.contains(w), "{err:?} should contain {w:?}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_err(
            "[[service]]\nname = \"s\"\n[[service.route]]\nname = \"r\"\npath = [\"/x\"]\n",
            &["line 5, column 1", "unknown field `path`", "paths"],
        );
        assert_err(
            "[[services]]\nname = \"s\"\n",
            &["unknown field `services`"],
        );
        assert_err(
            "[[service]]\nname = \"s\"\nupstreams = \"1.2.3.4:5\"\n",
            &["line 3", "unknown field `upstreams`"],
        );
    }

    #[test]
    fn malformed_toml_is_an_error() {
        assert_err("[[service]\nname = \"s\"\n", &["line 1"]);
        assert_err("[[service]]\nname = 3\n", &["line 2", "string"]);
        assert_err("[[service]]\nhosts = []\n", &["missing field `name`"]);
        assert_err(
            "[[service]]\nname = \"s\"\nupstream = 9000\n",
            &["an address string or a list"],
        );
    }

    #[test]
    fn invalid_values_are_errors() {
        assert_err(
            "[[service]]\nname = \"s\"\nupstream = \"127.0.0.1\"\n",
            &["service \"s\": upstream \"127.0.0.1\" is not an address with a port"],
        );
        assert_err(
            "[[service]]\nname = \"s\"\n[[service]]\nname = \"s\"\n",
            &["service \"s\" is defined twice"],
        );
        assert_err(
            "[[service]]\nname = \"s\"\n[[service.route]]\nname = \"r\"\npaths = [\"orders\"]\n",
            &["route \"r\": path \"orders\" must start with \"/\""],
        );
        assert_err(
            "[[service]]\nname = \"s\"\n[[service.route]]\nname = \"r\"\nmethods = [\"GE T\"]\n",
            &["\"GE T\" is not an HTTP method"],
        );
        assert_err(
            "[[service]]\nname = \"s\"\nhosts = [\"a b\"]\n",
            &["host \"a b\" is not a host name"],
        );
        assert_err(
            "[[service]]\nname = \"a\"\nupstream = \"127.0.0.1:1\"\n[[service]]\nname = \"b\"\nupstream = \"127.0.0.1:1\"\n",
            &["service \"b\": upstream 127.0.0.1:1 already belongs to service \"a\""],
        );
        assert_err("[[service]]\nname = \"\"\n", &["empty name"]);
    }

    const GENAI: &str = r#"
[[genai.provider]]
name = "openai"
upstream = ["127.0.0.1:9000", "[::1]:9000"]
hosts = ["API.openai.com"]
  [genai.provider.models."gpt-4o"]
  input_per_million = 2.5
  output_per_million = 10
  [genai.provider.models."text-embedding-3-small"]
  input_per_million = 0.02

[[genai.provider]]
name = "local-ollama"
upstream = "127.0.0.1:11434"
"#;

    #[test]
    fn parses_genai_providers() {
        let c = parse(GENAI).unwrap();
        assert!(c.services.is_empty());
        let [openai, ollama] = &c.genai.providers[..] else {
            panic!("{c:?}")
        };
        assert_eq!(openai.name, "openai");
        assert_eq!(
            openai.upstreams,
            [
                "127.0.0.1:9000".parse::<SocketAddr>().unwrap(),
                "[::1]:9000".parse().unwrap()
            ]
        );
        assert_eq!(openai.hosts, ["api.openai.com"]);
        assert_eq!(
            openai.models["gpt-4o"],
            Price {
                input_per_million: 2.5,
                output_per_million: 10.0
            }
        );
        assert_eq!(
            openai.models["text-embedding-3-small"].output_per_million,
            0.0
        );
        assert_eq!(ollama.upstreams, ["127.0.0.1:11434".parse().unwrap()]);
        assert!(ollama.models.is_empty());
    }

    #[test]
    fn genai_errors_name_the_problem() {
        assert_err(
            "[[genai.provider]]\nname = \"p\"\nupstreams = [\"1.2.3.4:5\"]\n",
            &["line 3", "unknown field `upstreams`"],
        );
        assert_err(
            "[[genai.provider]]\nname = \"p\"\n[genai.provider.models.\"m\"]\ninput_cost = 1.0\n",
            &["line 4", "unknown field `input_cost`", "input_per_million"],
        );
        assert_err("[genai]\nproviders = []\n", &["unknown field `providers`"]);
        assert_err(
            "[[genai.provider]]\nname = \"p\"\n[[genai.provider]]\nname = \"p\"\n",
            &["genai.provider \"p\" is defined twice"],
        );
        assert_err(
            "[[genai.provider]]\nname = \"a\"\nupstream = \"127.0.0.1:1\"\n[[genai.provider]]\nname = \"b\"\nupstream = \"127.0.0.1:1\"\n",
            &["genai.provider \"b\": upstream 127.0.0.1:1 already belongs to genai.provider \"a\""],
        );
        assert_err(
            "[[genai.provider]]\nname = \"p\"\nupstream = \"nowhere\"\n",
            &["genai.provider \"p\": upstream \"nowhere\" is not an address with a port"],
        );
        assert_err(
            "[[genai.provider]]\nname = \"p\"\n[genai.provider.models.\"m\"]\noutput_per_million = -1\n",
            &["genai.provider \"p\", model \"m\": output_per_million = -1 is not a price"],
        );
        assert_err(
            "[[genai.provider]]\nname = \"p\"\n[genai.provider.models.\"m\"]\ninput_per_million = \"2\"\n",
            &["line 4", "invalid type"],
        );
        assert_err("[[genai.provider]]\nname = \" \"\n", &["empty name"]);
        assert_err(
            "[[genai.provider]]\nname = \"p\"\nhosts = [\"a b\"]\n",
            &["genai.provider \"p\": host \"a b\" is not a host name"],
        );
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = Config::load(Path::new("/nonexistent/gatescope.toml")).unwrap_err();
        let err = format!("{:#}", anyhow::Error::from(err));
        assert!(
            err.starts_with("cannot read the config file /nonexistent/gatescope.toml: "),
            "{err}"
        );
    }
}
