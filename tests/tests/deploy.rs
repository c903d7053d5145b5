//! deploy/kubernetes/gatescope.yaml: valid for Kubernetes by its published
//! schemas, strictly, and the agent it describes runs as described: the
//! container's environment (what a kubelet would give it, down to the node
//! name) discovers a real nginx, counts its traffic, and answers the probes
//! at the path and port the manifest names.
//!
//! deploy/prometheus/: the rule files are valid for Prometheus (`promtool
//! check rules`), their unit tests pass (`promtool test rules`: each alert
//! fires and does not fire), and every family they name is one the agent
//! exports. A real Prometheus on prometheus.yml's scrape job (its Kubernetes
//! discovery replaced by the labels Kubernetes would give the manifest's
//! pod) scrapes the agent above, labels it with its node and pod, drops
//! other pods and ports, and evaluates every rule without an error.
//! podmonitor.yaml selects the manifest's pods, port and path.

use anyhow::{bail, ensure, Context, Result};
use gatescope_tests::accuracy::{sum_by_code, HTTP_REQUESTS};
use gatescope_tests::agent::{gatescope_bin, http_get, SETTLE_TIMEOUT};
use gatescope_tests::metrics::{ACCEPTED, REQUESTS_ALL, TARGET_PROCESSES};
use gatescope_tests::prom::Scrape;
use gatescope_tests::prometheus::Prometheus;
use gatescope_tests::{util, Scene};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

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

/// The rule files and how many rules each holds.
const RULE_FILES: [(&str, usize); 2] = [("gatescope-rules.yml", 12), ("genai-rules.yml", 4)];

#[test]
fn rules_pass_promtool() -> Result<()> {
    for (file, n) in RULE_FILES {
        let text = promtool(&["check", "rules", file])?;
        ensure!(
            text.contains(&format!("SUCCESS: {n} rules found")),
            "{text}"
        );
        let tests = file.replace(".yml", ".test.yml");
        let text = promtool(&["test", "rules", &tests])?;
        ensure!(text.contains("SUCCESS"), "{tests}: {text}");
    }
    Ok(())
}

/// The rules name families the agent exports (its golden native exposition,
/// or for the span families, exported with tracing on only, the agent's
/// table of families), so a renamed family cannot leave an alert that never
/// fires.
#[test]
fn rules_name_exported_families() -> Result<()> {
    let agent = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/src/metrics");
    let golden = std::fs::read_to_string(agent.join("golden/native.prom"))?;
    let families = std::fs::read_to_string(agent.join("families.rs"))?;
    // Label names share the families' prefix.
    const LABELS: [&str; 5] = [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
    ];
    for (file, _) in RULE_FILES {
        let rules = std::fs::read_to_string(prometheus_dir().join(file))?;
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
            let spans = family.starts_with("gatescope_span");
            ensure!(
                golden.contains(&format!("# TYPE {family} "))
                    || (spans && families.contains(&format!("\"{family}\""))),
                "{file} names {word}, which the agent does not export"
            );
            named += 1;
        }
        ensure!(named >= 5, "{file}: only {named} families found");
    }
    Ok(())
}

/// The node the test's kubelet would run the agent on.
const NODE: &str = "node-under-test";
/// The agent pod's name, as the DaemonSet would name it.
const POD: &str = "gatescope-x7k2p";

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
    let env = environment(c, NODE)?;
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
        scraped_by_prometheus(&docs, NODE, want.2).with_context(stderr)
    })();
    util::signal(agent.id(), libc::SIGTERM)?;
    let status = agent.wait()?;
    result?;
    ensure!(status.success(), "gatescope exited {status}:\n{}", stderr());
    Ok(())
}

/// `__meta_kubernetes_*` label names: Kubernetes' label and annotation names
/// with every character but letters, digits and `_` made `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The target groups Kubernetes' pod discovery gives for `pod` (a
/// DaemonSet's pod template) on `node`: one target per container port, at
/// 127.0.0.1 (the agent runs on the host network), with its labels,
/// annotations and port as `__meta_kubernetes_*` labels.
fn pod_targets(template: &Yaml, name: &str, node: &str, namespace: &str) -> Result<Vec<Value>> {
    let mut meta = serde_json::Map::new();
    meta.insert("__meta_kubernetes_namespace".into(), namespace.into());
    meta.insert("__meta_kubernetes_pod_name".into(), name.into());
    meta.insert("__meta_kubernetes_pod_node_name".into(), node.into());
    for (kind, map) in [
        ("label", &template["metadata"]["labels"]),
        ("annotation", &template["metadata"]["annotations"]),
    ] {
        for (k, v) in map.as_hash().context("pod metadata")? {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                bail!("pod {kind} not a string");
            };
            let key = format!("__meta_kubernetes_pod_{kind}_{}", sanitize(k));
            meta.insert(key, v.into());
        }
    }
    let mut groups = Vec::new();
    for c in template["spec"]["containers"]
        .as_vec()
        .context("containers")?
    {
        for port in c["ports"].as_vec().map(Vec::as_slice).unwrap_or_default() {
            let number = port["containerPort"].as_i64().context("containerPort")?;
            let mut labels = meta.clone();
            labels.insert(
                "__meta_kubernetes_pod_container_name".into(),
                c["name"].as_str().unwrap_or_default().into(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_port_name".into(),
                port["name"].as_str().unwrap_or_default().into(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_port_number".into(),
                number.to_string().into(),
            );
            groups.push(json!({
                "targets": [format!("127.0.0.1:{number}")],
                "labels": labels,
            }));
        }
    }
    Ok(groups)
}

/// A real Prometheus on deploy/prometheus/prometheus.yml, its Kubernetes
/// discovery replaced by a file of the targets Kubernetes would give: the
/// manifest's agent pod on `node` (whose agent is running), a sidecar port
/// of that pod and another app's annotated pod (both to be dropped).
/// Every rule file loaded; scrapes and evaluations every second.
fn scraped_by_prometheus(manifest: &[Yaml], node: &str, ok_requests: f64) -> Result<()> {
    let ds = manifest
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .context("no DaemonSet")?;
    let namespace = ds["metadata"]["namespace"].as_str().context("namespace")?;
    let template = &ds["spec"]["template"];
    let mut targets = pod_targets(template, POD, node, namespace)?;
    // Decoys: a second port of the agent's pod, and another app's pod that
    // asks to be scraped; both at closed ports, so a kept one shows down.
    let mut sidecar = targets.first().context("no container port")?.clone();
    sidecar["targets"] = json!(["127.0.0.1:1"]);
    sidecar["labels"]["__meta_kubernetes_pod_container_port_name"] = json!("debug");
    let mut other = targets[0].clone();
    other["targets"] = json!(["127.0.0.1:2"]);
    other["labels"]["__meta_kubernetes_pod_name"] = json!("nginx-0");
    other["labels"]["__meta_kubernetes_pod_label_app_kubernetes_io_name"] = json!("nginx");
    targets.extend([sidecar, other]);

    let dir = prometheus_dir();
    let text = std::fs::read_to_string(dir.join("prometheus.yml"))?;
    let mut config = YamlLoader::load_from_str(&text)?
        .pop()
        .context("empty prometheus.yml")?;
    let Yaml::Hash(top) = &mut config else {
        bail!("prometheus.yml is not a map");
    };
    let key = |k: &str| Yaml::String(k.to_owned());
    let Some(Yaml::Hash(global)) = top.get_mut(&key("global")) else {
        bail!("no global section");
    };
    for k in ["scrape_interval", "evaluation_interval"] {
        global.insert(key(k), key("1s"));
    }
    let Some(Yaml::Array(jobs)) = top.get_mut(&key("scrape_configs")) else {
        bail!("no scrape_configs");
    };
    let [Yaml::Hash(job)] = &mut jobs[..] else {
        bail!("expected one scrape job");
    };
    ensure!(
        job.remove(&key("kubernetes_sd_configs")).is_some(),
        "the job does not discover by Kubernetes"
    );
    let files = YamlLoader::load_from_str("- files: [pods.json]")?.remove(0);
    job.insert(key("file_sd_configs"), files);
    let mut config_text = String::new();
    YamlEmitter::new(&mut config_text).dump(&config)?;

    let mut files = vec![("pods.json".to_owned(), serde_json::to_string(&targets)?)];
    for (rules, _) in RULE_FILES {
        files.push((rules.to_owned(), std::fs::read_to_string(dir.join(rules))?));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let prom = Prometheus::start(&config_text, &files)?;

    // One target kept, scraped and up, with its node and pod; the decoys
    // dropped by the relabelling.
    let active = util::poll(Duration::from_secs(20), "the agent scraped", || {
        let active = prom.active_targets()?;
        Ok(active
            .iter()
            .all(|t| t["health"] == "up")
            .then_some(active)
            .filter(|a| !a.is_empty()))
    })
    .with_context(|| format!("targets: {:?}", prom.active_targets()))?;
    ensure!(active.len() == 1, "active targets: {active:?}");
    let labels = &active[0]["labels"];
    for (k, v) in [("job", "gatescope"), ("node", node), ("pod", POD)] {
        ensure!(labels[k] == v, "target label {k}: {labels}");
    }
    let dropped = prom.dropped_targets()?;
    ensure!(dropped.len() == 2, "dropped targets: {dropped:?}");
    // The agent's numbers, through Prometheus, under the target's labels.
    let q =
        format!("sum(gatescope_http_requests_total{{code=\"200\",node=\"{node}\",pod=\"{POD}\"}})");
    let got = util::poll(
        Duration::from_secs(20),
        "the requests in Prometheus",
        || {
            let v = prom.query(&q)?.first().map(|(_, v)| *v);
            Ok(v.filter(|v| *v == ok_requests))
        },
    )
    .with_context(|| format!("{q}: {:?}, want {ok_requests}", prom.query(&q)))?;
    ensure!(got == ok_requests);
    // Every rule evaluated without an error against the agent's series, and
    // the agent-down alert quiet.
    let want: usize = RULE_FILES.iter().map(|(_, n)| n).sum();
    let rules = util::poll(Duration::from_secs(20), "every rule evaluated", || {
        let rules = prom.rules()?;
        Ok(rules
            .iter()
            .all(|r| r["health"] != "unknown")
            .then_some(rules))
    })?;
    ensure!(
        rules.len() == want,
        "{} rules loaded, want {want}",
        rules.len()
    );
    for r in &rules {
        ensure!(
            r["health"] == "ok",
            "rule {}: {} {}",
            r["name"],
            r["health"],
            r["lastError"]
        );
    }
    let down = rules
        .iter()
        .find(|r| r["name"] == "GatescopeAgentDown")
        .context("no GatescopeAgentDown rule")?;
    ensure!(down["state"] == "inactive", "GatescopeAgentDown: {down}");
    Ok(())
}

/// podmonitor.yaml, for the Prometheus Operator, selects the DaemonSet's
/// pods in its namespace, on the container port the probes use, at the
/// path the pods' `prometheus.io/path` annotation names.
#[test]
fn podmonitor_selects_the_agent_pods() -> Result<()> {
    let manifest = YamlLoader::load_from_str(&std::fs::read_to_string(manifest_path())?)?;
    let ds = manifest
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .context("no DaemonSet")?;
    let template = &ds["spec"]["template"];
    let text = std::fs::read_to_string(prometheus_dir().join("podmonitor.yaml"))?;
    let pm = YamlLoader::load_from_str(&text)?.remove(0);
    ensure!(pm["apiVersion"].as_str() == Some("monitoring.coreos.com/v1"));
    ensure!(pm["kind"].as_str() == Some("PodMonitor"));
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_hash()
        .context("no matchLabels")?;
    ensure!(!selector.is_empty(), "an empty selector selects every pod");
    for (k, v) in selector {
        ensure!(
            &template["metadata"]["labels"][k.as_str().context("label")?] == v,
            "the pods have no label {k:?}: {v:?}"
        );
    }
    let namespaces = pm["spec"]["namespaceSelector"]["matchNames"]
        .as_vec()
        .context("no namespaceSelector")?;
    ensure!(namespaces.contains(&ds["metadata"]["namespace"]));
    let [endpoint] = pm["spec"]["podMetricsEndpoints"]
        .as_vec()
        .context("no podMetricsEndpoints")?
        .as_slice()
    else {
        bail!("expected one endpoint");
    };
    let c = container(&manifest)?;
    let port = endpoint["port"].as_str().context("endpoint port name")?;
    let number = c["ports"]
        .as_vec()
        .context("no ports")?
        .iter()
        .find(|p| p["name"].as_str() == Some(port))
        .and_then(|p| p["containerPort"].as_i64())
        .with_context(|| format!("no container port named {port}"))?;
    let (probe_path, probe_port) = probe_port(c, "readinessProbe")?;
    ensure!(
        i64::from(probe_port) == number,
        "the probes use port {probe_port}"
    );
    let path = endpoint["path"].as_str().context("endpoint path")?;
    ensure!(path == probe_path, "path {path}, probes {probe_path}");
    let annotation = &template["metadata"]["annotations"]["prometheus.io/path"];
    ensure!(
        annotation.as_str() == Some(path),
        "annotation {annotation:?}"
    );
    Ok(())
}
