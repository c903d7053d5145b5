//! A real nginx (master + N workers) as a reverse proxy in front of one upstream.

pub use crate::access_log::AccessLogEntry;
use crate::access_log::{
    parse_acc_log, parse_access_line, AccEntry, ACC_LOG_FORMAT, GS_LOG_FORMAT,
};
use crate::util::{self, TempDir};
use crate::workload::SLOW_TIMEOUT_MS;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX_BIN: &str = "/usr/sbin/nginx";
/// The parent span id nginx writes into `/gw/`'s upstream `traceparent`
/// ([`Nginx::start_spans`]).
pub const GW_SPAN_ID: &str = "00f067aa0ba902b7";

pub struct NginxConfig {
    pub workers: u32,
    pub listen_port: u16,
    pub upstream_port: u16,
}

/// Process-level settings of [`Nginx::start_tuned`].
#[derive(Debug, Clone)]
pub struct Tuning {
    /// `daemon on`: nginx forks and the launcher exits, as in production (the
    /// master is then found through the pid file, and [`Nginx::upgrade_begin`]
    /// works: a foreground master ignores USR2 while its parent lives).
    pub daemon: bool,
    /// `events { worker_connections N; }`
    pub worker_connections: u32,
    /// `worker_rlimit_nofile N;`
    pub worker_rlimit_nofile: Option<u32>,
    /// Idle upstream connections kept per worker (`keepalive N;`): at least the
    /// load generator's connection count, or short-lived upstream connections
    /// exhaust loopback ephemeral ports (TIME_WAIT) and nginx answers 502.
    pub upstream_keepalive: u32,
    /// `keepalive_timeout Ns;` in the upstream block (nginx's default is 60 s):
    /// how long an idle upstream connection is kept.
    pub upstream_keepalive_timeout_s: Option<u32>,
    /// The address of `listen` (`0.0.0.0` to be reachable on every interface;
    /// an IPv6 address such as `::1` is written in brackets).
    pub listen_host: &'static str,
    /// The upstream server's address (`server HOST:upstream_port;`), e.g. a
    /// [`crate::tun::TunNet`]'s peer address or `::1`; `None`: `127.0.0.1`.
    pub upstream_host: Option<String>,
    /// Directives added to the `server` block.
    pub server_extra: &'static str,
    /// `listen ... reuseport backlog=4096`: one listening socket per worker, so
    /// the kernel spreads accepted connections evenly over the workers (each
    /// worker may hold only RLIMIT_NOFILE of them), and a deep accept queue so
    /// a burst of connects is not dropped and retried a second later.
    pub reuseport: bool,
    /// `client_header_timeout N` (seconds; nginx's default is 60): how long
    /// a connection may stay idle before its first request.
    pub client_header_timeout_s: Option<u32>,
    /// The nginx binary to run (default [`NGINX_BIN`]); a [`RenamedBinary`]
    /// gives nginx a command name no other nginx on the machine has.
    pub bin: Option<PathBuf>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            daemon: false,
            worker_connections: 1024,
            worker_rlimit_nofile: None,
            upstream_keepalive: 16,
            upstream_keepalive_timeout_s: None,
            listen_host: "127.0.0.1",
            upstream_host: None,
            server_extra: "",
            reuseport: false,
            client_header_timeout_s: None,
            bin: None,
        }
    }
}

/// A copy of a gateway's binary (nginx's by default) under a unique file
/// name, so that its processes' command name (/proc/PID/comm: the file name,
/// at most 15 bytes) is this test's alone, whatever other copy runs on the
/// machine. Removed on drop.
pub struct RenamedBinary {
    _dir: TempDir,
    path: PathBuf,
    name: String,
}

impl RenamedBinary {
    /// nginx's binary as `<prefix><digits>`, at most 15 bytes; `prefix` at
    /// most 4.
    pub fn new(prefix: &str) -> Result<Self> {
        Self::of(Path::new(NGINX_BIN), prefix)
    }

    /// A copy of `bin` as `<prefix><digits>` (another gateway's binary).
    pub fn of(bin: &Path, prefix: &str) -> Result<Self> {
        ensure!(prefix.len() <= 4, "prefix {prefix:?} longer than 4 bytes");
        ensure!(
            bin.exists(),
            "{} not found (install it with apt-get)",
            bin.display()
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        // pid (at most 7 digits) and the clock's last 4: unique per run.
        let name = format!("{prefix}{}{:04}", std::process::id(), nanos % 10_000);
        ensure!(
            name.len() <= 15,
            "command name {name:?} longer than 15 bytes"
        );
        let dir = TempDir::new("renamed-bin")?;
        let path = dir.path().join(&name);
        std::fs::copy(bin, &path)
            .with_context(|| format!("copying {} to {}", bin.display(), path.display()))?;
        Ok(Self {
            _dir: dir,
            path,
            name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The command name its processes run under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `host` as the host part of `host:port`: an IPv6 address in brackets.
fn host_part(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// `<bin> -c <conf> -p <dir> -e <dir>/error.log`: nginx on `conf` with every file it writes
/// in `dir` (also how `cargo xtask demo` and `bench` start it).
pub fn command(bin: &Path, conf: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"));
    cmd
}

/// The start of a test's nginx.conf in directory `d`: the main context
/// (foreground master, `workers` workers, root, pid and error log in `d`),
/// `events`, and `http {` opened with the access log off and every temp
/// path in `d`. The caller goes on inside `http` and closes it.
pub fn conf_head(d: &str, workers: u32) -> String {
    format!(
        "daemon off;
master_process on;
worker_processes {workers};
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
"
    )
}

/// See [`Nginx::start_accuracy`].
pub struct AccuracyConfig {
    pub workers: u32,
    pub listen_port: u16,
    pub upstream_port: u16,
    /// A port nothing listens on.
    pub down_port: u16,
    /// HTTPS on the listener (`listen ... ssl` with this certificate and key,
    /// TLS 1.2 and 1.3: nginx 1.22's default lacks 1.3); every other
    /// directive, the log format and the locations are the same.
    pub tls: Option<ListenTls>,
}

/// `ssl_certificate` and `ssl_certificate_key` of a `listen ... ssl` server
/// ([`crate::tls::SelfSigned::listen_tls`]).
#[derive(Debug, Clone)]
pub struct ListenTls {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

pub struct Nginx {
    /// The foreground master, or the daemonizing launcher (already exited).
    child: Child,
    daemon: bool,
    /// The master's pid (a new one after [`Nginx::upgrade_finish`]).
    master: u32,
    dir: TempDir,
    workers: u32,
    listen_host: String,
    listen_port: u16,
    /// The worker set after start / the last reload.
    current_workers: Vec<u32>,
}

impl Nginx {
    /// Render the config into a fresh temp dir, start `nginx -c conf -p dir` in the
    /// foreground and wait until it listens and all workers exist.
    pub fn start(cfg: &NginxConfig) -> Result<Self> {
        Self::start_tuned(cfg, &Tuning::default())
    }

    /// [`Nginx::start`] with process-level [`Tuning`].
    pub fn start_tuned(cfg: &NginxConfig, t: &Tuning) -> Result<Self> {
        ensure!(
            Path::new(NGINX_BIN).exists(),
            "{NGINX_BIN} not found (apt-get install nginx)"
        );
        let dir = TempDir::new("nginx")?;
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"daemon {daemon};
master_process on;
worker_processes {workers};
{rlimit}user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {{
    worker_connections {wc};
}}

http {{
    access_log off;
    log_format gs {GS_LOG_FORMAT};
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;

    upstream backend {{
        server {up_host}:{up};
        keepalive {ka};
{up_timeout}    }}

    server {{
        listen {host}:{port}{listen_opts};
{header_timeout}        access_log {d}/access.log gs;
        {extra}
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }}
    }}
}}
"#,
            daemon = if t.daemon { "on" } else { "off" },
            workers = cfg.workers,
            rlimit = t
                .worker_rlimit_nofile
                .map(|n| format!("worker_rlimit_nofile {n};\n"))
                .unwrap_or_default(),
            wc = t.worker_connections,
            ka = t.upstream_keepalive,
            up_timeout = t
                .upstream_keepalive_timeout_s
                .map(|n| format!("        keepalive_timeout {n}s;\n"))
                .unwrap_or_default(),
            listen_opts = if t.reuseport {
                " reuseport backlog=4096"
            } else {
                ""
            },
            header_timeout = t
                .client_header_timeout_s
                .map(|n| format!("        client_header_timeout {n}s;\n"))
                .unwrap_or_default(),
            up_host = host_part(t.upstream_host.as_deref().unwrap_or("127.0.0.1")),
            up = cfg.upstream_port,
            port = cfg.listen_port,
            host = host_part(t.listen_host),
            extra = t.server_extra,
        );
        let bin = t.bin.as_deref().unwrap_or(Path::new(NGINX_BIN));
        Self::launch_as(
            bin,
            dir,
            &conf,
            cfg.workers,
            (t.listen_host, cfg.listen_port),
            t.daemon,
        )
    }

    /// nginx on a config the caller writes: `conf(dir)` gets the directory all
    /// of nginx's files go in (pid, logs, temp paths); the config must listen
    /// on 127.0.0.1:`listen_port` and run `workers` workers in the foreground.
    pub fn start_conf(
        conf: impl FnOnce(&str) -> String,
        workers: u32,
        listen_port: u16,
    ) -> Result<Self> {
        ensure!(
            Path::new(NGINX_BIN).exists(),
            "{NGINX_BIN} not found (apt-get install nginx)"
        );
        let dir = TempDir::new("nginx")?;
        let text = conf(&dir.path().display().to_string());
        Self::launch_as(
            Path::new(NGINX_BIN),
            dir,
            &text,
            workers,
            ("127.0.0.1", listen_port),
            false,
        )
    }

    /// The accuracy tests' nginx: `workers` workers on `listen_port`, the `acc` access
    /// log (see [`crate::access_log`]) in [`Nginx::acc_log_path`], and
    /// - `location /`: the upstream on `upstream_port`, HTTP/1.1 keep-alive (16 idle);
    /// - `location /slow/`: the same with `proxy_read_timeout` [`SLOW_TIMEOUT_MS`](crate::workload::SLOW_TIMEOUT_MS)
    ///   (`/slow/2000` -> 504);
    /// - `location /down`: a closed port `down_port` (-> 502);
    /// - `location = /missing`: `return 404` from nginx itself.
    ///
    /// With [`AccuracyConfig::tls`], the listener speaks HTTPS.
    pub fn start_accuracy(cfg: &AccuracyConfig) -> Result<Self> {
        ensure!(
            Path::new(NGINX_BIN).exists(),
            "{NGINX_BIN} not found (apt-get install nginx)"
        );
        let dir = TempDir::new("nginx-acc")?;
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"{head}    log_format acc {ACC_LOG_FORMAT};

    upstream backend {{
        server 127.0.0.1:{up};
        keepalive 16;
    }}

    upstream down {{
        server 127.0.0.1:{down} max_fails=0;
    }}

    server {{
        listen 127.0.0.1:{port}{ssl};
{tls}        access_log {d}/acc.log acc;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location / {{
            proxy_pass http://backend;
        }}
        location /slow/ {{
            proxy_read_timeout {slow}ms;
            proxy_pass http://backend;
        }}
        location /down {{
            proxy_pass http://down;
        }}
        location = /missing {{
            return 404;
        }}
    }}
}}
"#,
            head = conf_head(&d, cfg.workers),
            up = cfg.upstream_port,
            down = cfg.down_port,
            port = cfg.listen_port,
            slow = SLOW_TIMEOUT_MS,
            ssl = if cfg.tls.is_some() { " ssl" } else { "" },
            tls = cfg
                .tls
                .as_ref()
                .map(|t| format!(
                    "        ssl_certificate {};\n        ssl_certificate_key {};\n        \
                     ssl_protocols TLSv1.2 TLSv1.3;\n",
                    t.certificate.display(),
                    t.key.display()
                ))
                .unwrap_or_default(),
        );
        Self::launch(dir, &conf, cfg.workers, cfg.listen_port)
    }

    /// The span tests' nginx (tests/tests/spans.rs): one worker (so requests
    /// are served one by one as the client sends them), the `acc` log, an
    /// `ids` log of `$uri $request_id` ([`Nginx::ids_log`]), and
    /// - `location /`: the upstream on `upstream_port`, keep-alive;
    /// - `location /retry/`: `retry_ports`, tried in turn with
    ///   `proxy_next_upstream error http_502` (a peer that answers 502 makes
    ///   nginx retry on the next);
    /// - `location /gw/`: the upstream at `/size/` (URI rewritten), with nginx
    ///   writing its own `traceparent: 00-$request_id-`[`GW_SPAN_ID`]`-01`;
    /// - `location = /missing`: `return 404` from nginx itself.
    pub fn start_spans(
        listen_port: u16,
        upstream_port: u16,
        retry_ports: [u16; 2],
    ) -> Result<Self> {
        ensure!(
            Path::new(NGINX_BIN).exists(),
            "{NGINX_BIN} not found (apt-get install nginx)"
        );
        let dir = TempDir::new("nginx-spans")?;
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"{head}    log_format acc {ACC_LOG_FORMAT};
    log_format ids '$uri $request_id';

    upstream backend {{
        server 127.0.0.1:{up};
        keepalive 16;
    }}
    upstream retry {{
        server 127.0.0.1:{r0} max_fails=0;
        server 127.0.0.1:{r1} max_fails=0;
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        access_log {d}/acc.log acc;
        access_log {d}/ids.log ids;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location / {{
            proxy_pass http://backend;
        }}
        location /retry/ {{
            proxy_next_upstream error http_502;
            proxy_pass http://retry;
        }}
        location /gw/ {{
            proxy_set_header traceparent "00-$request_id-{GW_SPAN_ID}-01";
            proxy_pass http://backend/size/;
        }}
        location = /missing {{
            return 404;
        }}
    }}
}}
"#,
            head = conf_head(&d, 1),
            up = upstream_port,
            r0 = retry_ports[0],
            r1 = retry_ports[1],
            port = listen_port,
        );
        Self::launch(dir, &conf, 1, listen_port)
    }

    /// `$uri` -> `$request_id` of each request, from [`Nginx::start_spans`]'s
    /// `ids` log.
    pub fn ids_log(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.dir.path().join("ids.log"))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(u, id)| (u.to_owned(), id.to_owned()))
            .collect())
    }

    /// Write `conf` into `dir`, start `nginx -c conf -p dir` in the foreground and
    /// wait until it listens on `listen_port` and all workers exist.
    fn launch(dir: TempDir, conf: &str, workers: u32, listen_port: u16) -> Result<Self> {
        Self::launch_as(
            Path::new(NGINX_BIN),
            dir,
            conf,
            workers,
            ("127.0.0.1", listen_port),
            false,
        )
    }

    fn launch_as(
        bin: &Path,
        dir: TempDir,
        conf: &str,
        workers: u32,
        (listen_host, listen_port): (&str, u16),
        daemon: bool,
    ) -> Result<Self> {
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let stderr = File::create(dir.path().join("stderr.log"))?;
        let child = command(bin, &conf_path, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning nginx")?;
        let master = child.id();
        let mut ng = Nginx {
            child,
            daemon,
            master,
            dir,
            workers,
            listen_host: listen_host.to_owned(),
            listen_port,
            current_workers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if daemon {
            // The launcher forks the master and exits 0; the master writes the pid file.
            let st = loop {
                if let Some(st) = ng.child.try_wait()? {
                    break st;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the nginx launcher did not exit within 10 s:\n{}",
                    ng.diagnostics()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            ensure!(
                st.success(),
                "nginx start-up failed ({st}):\n{}",
                ng.diagnostics()
            );
            ng.master = util::poll(Duration::from_secs(10), "nginx.pid", || {
                Ok(ng.read_pid_file("nginx.pid"))
            })
            .with_context(|| ng.diagnostics())?;
        }
        loop {
            if daemon {
                ensure!(
                    util::is_alive(ng.master),
                    "nginx master {} exited during start-up:\n{}",
                    ng.master,
                    ng.diagnostics()
                );
            } else if let Some(st) = ng.child.try_wait()? {
                bail!("nginx exited during start-up ({st}):\n{}", ng.diagnostics());
            }
            let pids = ng.worker_pids();
            // As the master sees it: it may run in a network namespace of
            // its own.
            let listening = listen_host.parse().is_ok_and(|ip| {
                util::is_listening_seen_by(&ng.master.to_string(), ip, listen_port)
            });
            if listening && pids.len() == workers as usize {
                ng.current_workers = pids;
                return Ok(ng);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not listen on {}:{} with {} workers within 10 s:\n{}",
                    listen_host,
                    listen_port,
                    workers,
                    ng.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn master_pid(&self) -> u32 {
        self.master
    }

    /// The pid in `<dir>/<name>` (`nginx.pid`, `nginx.pid.oldbin`), if any.
    fn read_pid_file(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Rewrite `worker_processes` in the config for the next [`Nginx::reload`].
    pub fn set_workers(&mut self, workers: u32) -> Result<()> {
        let path = self.dir.path().join("nginx.conf");
        let conf = std::fs::read_to_string(&path)?;
        let mut found = false;
        let new: String = conf
            .lines()
            .map(|l| {
                if l.starts_with("worker_processes ") {
                    found = true;
                    format!("worker_processes {workers};\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        ensure!(found, "no worker_processes line in {}", path.display());
        std::fs::write(&path, new)?;
        self.workers = workers;
        Ok(())
    }

    /// nginx's binary upgrade, first half: USR2 makes the master re-execute its
    /// binary in a forked child (the new master, a descendant of the old one);
    /// wait until the new master and its workers run and the pid file moved to
    /// `nginx.pid.oldbin`. Needs [`Tuning::daemon`], and the caller must be a
    /// child subreaper ([`util::set_child_subreaper`]) or the master's parent
    /// gone (nginx ignores USR2 while the parent it started under lives).
    /// Returns the new master's pid.
    pub fn upgrade_begin(&mut self) -> Result<u32> {
        ensure!(self.daemon, "binary upgrade needs a daemonized nginx");
        let old = self.master;
        util::signal(old, libc::SIGUSR2)?;
        let workers = self.workers as usize;
        util::poll(Duration::from_secs(15), "the new nginx master", || {
            let (Some(new), Some(oldbin)) = (
                self.read_pid_file("nginx.pid"),
                self.read_pid_file("nginx.pid.oldbin"),
            ) else {
                return Ok(None);
            };
            if new == old || oldbin != old || util::proc_stat(new).map(|s| s.ppid) != Some(old) {
                return Ok(None);
            }
            Ok((util::children_of(new).len() == workers).then_some(new))
        })
        .with_context(|| {
            format!(
                "old master {old}, children {:?}\n{}",
                util::children_of(old),
                self.diagnostics()
            )
        })
    }

    /// Second half: WINCH the old master (its workers finish and exit), then QUIT
    /// it; wait until only the new master and its workers remain. From then on
    /// [`Nginx::master_pid`] is the new master.
    pub fn upgrade_finish(&mut self, new: u32) -> Result<()> {
        let old = self.master;
        util::signal(old, libc::SIGWINCH)?;
        util::poll(Duration::from_secs(15), "the old workers to exit", || {
            Ok((util::children_of(old) == vec![new]).then_some(()))
        })
        .with_context(|| format!("children of {old}: {:?}", util::children_of(old)))?;
        util::signal(old, libc::SIGQUIT)?;
        util::poll(Duration::from_secs(15), "the old master to exit", || {
            Ok((!util::is_alive(old)).then_some(()))
        })
        .with_context(|| self.diagnostics())?;
        util::reap(old);
        self.master = new;
        self.current_workers = self.worker_pids();
        ensure!(
            self.current_workers.len() == self.workers as usize,
            "new master {new} has workers {:?}",
            self.current_workers
        );
        Ok(())
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// "<host>:<port>" (127.0.0.1 unless tuned; `[::1]:<port>` for IPv6), as the
    /// agent labels the listener.
    pub fn listen_addr(&self) -> String {
        format!("{}:{}", host_part(&self.listen_host), self.listen_port)
    }

    /// Live (non-zombie) children of the master, sorted.
    pub fn worker_pids(&self) -> Vec<u32> {
        util::children_of(self.master_pid())
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) every worker: the kernel goes on
    /// accepting connections and queuing bytes for them meanwhile.
    pub fn freeze_workers(&self, frozen: bool) -> Result<()> {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        for w in self.worker_pids() {
            util::signal(w, sig)?;
        }
        Ok(())
    }

    /// Master + live workers.
    pub fn process_count(&self) -> usize {
        1 + self.worker_pids().len()
    }

    /// SIGHUP the master; wait until `workers` new workers exist and every old worker
    /// has exited (close client connections first: old workers linger while they
    /// serve requests). Returns the new worker pids.
    pub fn reload(&mut self) -> Result<Vec<u32>> {
        let old: BTreeSet<u32> = self.current_workers.iter().copied().collect();
        util::signal(self.master_pid(), libc::SIGHUP)?;
        let workers = self.workers as usize;
        let new = util::poll(Duration::from_secs(15), "nginx reload", || {
            let now = self.worker_pids();
            let fresh: Vec<u32> = now.iter().copied().filter(|p| !old.contains(p)).collect();
            let lingering = old.iter().any(|p| util::is_alive(*p));
            Ok((fresh.len() == workers && now.len() == workers && !lingering).then_some(fresh))
        })
        .with_context(|| {
            format!(
                "old workers {:?}, now {:?}\n{}",
                old,
                self.worker_pids(),
                self.diagnostics()
            )
        })?;
        self.current_workers.clone_from(&new);
        Ok(new)
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The directory all of this nginx's files are in (see [`Nginx::start_conf`]).
    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// The `acc` log of [`Nginx::start_accuracy`].
    pub fn acc_log_path(&self) -> PathBuf {
        self.dir.path().join("acc.log")
    }

    /// The `acc` log's raw text (empty before the first request).
    pub fn acc_log_text(&self) -> String {
        std::fs::read_to_string(self.acc_log_path()).unwrap_or_default()
    }

    /// The `acc` log's complete lines.
    pub fn acc_log(&self) -> Result<Vec<AccEntry>> {
        let text = self.acc_log_text();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        parse_acc_log(complete)
    }

    pub fn access_log(&self) -> Result<Vec<AccessLogEntry>> {
        let text = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        text.lines().map(parse_access_line).collect()
    }

    /// Wait until the access log holds at least `n` lines and return them.
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> Result<Vec<AccessLogEntry>> {
        util::poll(timeout, &format!("{n} access-log lines"), || {
            let l = self.access_log()?;
            Ok((l.len() >= n).then_some(l))
        })
    }

    /// The error log and the captured stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- nginx stderr ---\n{}\n--- nginx error.log (tail) ---\n{}",
            read("stderr.log"),
            util::tail(&read("error.log"), 40)
        )
    }

    /// Graceful stop (SIGQUIT), SIGKILL for everything left after 5 s.
    pub fn stop(&mut self) {
        if self.daemon {
            self.stop_daemon();
            return;
        }
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let workers = self.worker_pids();
        let _ = util::signal(self.master_pid(), libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for w in self.worker_pids().into_iter().chain(workers) {
            let _ = util::signal(w, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop_daemon(&mut self) {
        let _ = self.child.try_wait();
        let master = self.master;
        if !util::is_alive(master) {
            util::reap(master);
            return;
        }
        let workers = self.worker_pids();
        let _ = util::signal(master, libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && util::is_alive(master) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if util::is_alive(master) {
            for w in self.worker_pids().into_iter().chain(workers) {
                let _ = util::signal(w, libc::SIGKILL);
            }
            let _ = util::signal(master, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(50));
        }
        util::reap(master);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
