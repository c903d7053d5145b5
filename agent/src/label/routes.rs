//! Names each exchange's service and route, as Kong's entities would.
//!
//! With a `--config` file: a downstream exchange takes the route whose path
//! prefix is the longest among those whose hosts and methods match (ties: the
//! route with more conditions, then the one written first); an upstream
//! exchange takes the service whose `upstream` is its peer, then that
//! service's route by method and path (the upstream's Host header is the
//! gateway's choice, so hosts are not compared).
//!
//! Otherwise, or when nothing matches: the service is the gateway's listening
//! address (downstream) or the peer's (upstream), and the route is the path
//! with numeric, UUID and long hex segments replaced by `{id}`. Each service
//! keeps at most `max_routes` distinct templates; later ones are named
//! [`OTHER`] and reported as overflow. Memory is bounded: at most
//! [`MAX_AUTO_SERVICES`] address-named services, `max_routes` templates each
//! of at most [`MAX_TEMPLATE_BYTES`].

use std::{collections::hash_map::Entry, net::SocketAddr, sync::Arc};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::{capture::decode::Role, config::Config};

/// The route of exchanges over a service's template cap, and the service of
/// exchanges over [`MAX_AUTO_SERVICES`].
pub const OTHER: &str = "other";
/// Address-named services kept; more distinct addresses are named [`OTHER`].
pub const MAX_AUTO_SERVICES: usize = 1024;
/// Longer templates are cut (at a character boundary).
pub const MAX_TEMPLATE_BYTES: usize = 256;
/// Stands for an identifier segment in a template.
pub const ID: &str = "{id}";

#[derive(Clone, Copy, Debug)]
pub struct RouteInput<'a> {
    pub role: Role,
    /// The gateway's listening socket (downstream).
    pub listener: Option<SocketAddr>,
    /// The upstream's address (upstream).
    pub peer: Option<SocketAddr>,
    pub host: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub service: Arc<str>,
    pub route: Arc<str>,
    /// The route is [`OTHER`] because the service's template cap (or the
    /// service cap) was reached.
    pub overflow: bool,
    /// The route is a configured one (`--config`), not a path template:
    /// spans name themselves and set `http.route` only then.
    pub configured: bool,
}

/// One host pattern, lower case.
#[derive(Debug)]
pub(super) enum HostPattern {
    Exact(Box<str>),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(Box<str>),
    /// `example.*`: stored as `example.`.
    Prefix(Box<str>),
}

impl HostPattern {
    pub(super) fn new(p: &str) -> Self {
        if let Some(rest) = p.strip_prefix('*') {
            HostPattern::Suffix(rest.into())
        } else if let Some(rest) = p.strip_suffix('*') {
            HostPattern::Prefix(rest.into())
        } else {
            HostPattern::Exact(p.into())
        }
    }

    /// `host` is already stripped of its port; compared without case.
    pub(super) fn matches(&self, host: &str) -> bool {
        let h = host.as_bytes();
        match self {
            HostPattern::Exact(p) => h.eq_ignore_ascii_case(p.as_bytes()),
            HostPattern::Suffix(p) => {
                h.len() > p.len() && h[h.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
            }
            HostPattern::Prefix(p) => {
                h.len() > p.len() && h[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }
}

fn any_host(patterns: &[HostPattern], host: Option<&str>) -> bool {
    patterns.is_empty() || host.is_some_and(|h| patterns.iter().any(|p| p.matches(h)))
}

#[derive(Debug)]
struct RouteEntry {
    name: Arc<str>,
    service: usize,
    /// Empty: any method.
    methods: Vec<Box<str>>,
    /// The route's own hosts, else its service's; empty: any host.
    hosts: Vec<HostPattern>,
}

/// One path prefix of one route; the router scans these in precedence order.
#[derive(Debug)]
struct PrefixEntry {
    prefix: Box<str>,
    route: usize,
}

/// The distinct templates of one service.
#[derive(Debug)]
struct Templates {
    service: Arc<str>,
    /// FxHash, as the connection table's maps (looked up per exchange;
    /// SipHash was 3.6% of the agent's CPU across this and the metrics'
    /// handle caches, BENCHMARKS.md). Clients choose the paths these
    /// templates come from, but a service holds at most `max_routes` of
    /// them, so colliding paths cost at most a scan of that many.
    seen: FxHashSet<Arc<str>>,
}

impl Templates {
    fn new(service: Arc<str>) -> Self {
        Templates {
            service,
            seen: FxHashSet::default(),
        }
    }
}

#[derive(Debug)]
struct ServiceEntry {
    hosts: Vec<HostPattern>,
    templates: Templates,
}

#[derive(Debug)]
pub struct Router {
    services: Vec<ServiceEntry>,
    routes: Vec<RouteEntry>,
    /// Precedence order: longest prefix, then more conditions, then config order.
    prefixes: Vec<PrefixEntry>,
    by_upstream: FxHashMap<SocketAddr, usize>,
    /// Services named by address, when no configured one matches.
    by_addr: FxHashMap<SocketAddr, Templates>,
    max_routes: usize,
    other: Arc<str>,
    scratch: String,
}

impl Router {
    pub fn from_config(config: Option<Config>, max_routes: usize) -> Router {
        let mut router = Router {
            services: Vec::new(),
            routes: Vec::new(),
            prefixes: Vec::new(),
            by_upstream: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            max_routes,
            other: Arc::from(OTHER),
            scratch: String::with_capacity(MAX_TEMPLATE_BYTES + 8),
        };
        let mut ranked = Vec::new();
        for (si, service) in config.unwrap_or_default().services.into_iter().enumerate() {
            for addr in &service.upstreams {
                router.by_upstream.entry(*addr).or_insert(si);
            }
            for route in service.routes {
                let ri = router.routes.len();
                let own_hosts = !route.hosts.is_empty();
                let hosts = if own_hosts {
                    &route.hosts
                } else {
                    &service.hosts
                };
                let conditions =
                    usize::from(!hosts.is_empty()) + usize::from(!route.methods.is_empty());
                let paths = if route.paths.is_empty() {
                    vec![String::new()]
                } else {
                    route.paths
                };
                for prefix in paths {
                    ranked.push((
                        prefix.len(),
                        conditions,
                        ranked.len(),
                        PrefixEntry {
                            prefix: prefix.into(),
                            route: ri,
                        },
                    ));
                }
                router.routes.push(RouteEntry {
                    name: Arc::from(route.name),
                    service: si,
                    methods: route.methods.into_iter().map(Into::into).collect(),
                    hosts: hosts.iter().map(|h| HostPattern::new(h)).collect(),
                });
            }
            router.services.push(ServiceEntry {
                hosts: service.hosts.iter().map(|h| HostPattern::new(h)).collect(),
                templates: Templates::new(Arc::from(service.name)),
            });
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        router.prefixes = ranked.into_iter().map(|(_, _, _, e)| e).collect();
        router
    }

    /// The service and route names of an exchange, and whether the route
    /// overflowed the service's template cap.
    pub fn route(&mut self, input: &RouteInput) -> Routed {
        let host = input.host.map(strip_port);
        match input.role {
            Role::Downstream => {
                if let Some(ri) = self.match_route(host, input.method, input.path, None, true) {
                    let route = &self.routes[ri];
                    return Routed {
                        service: self.services[route.service].templates.service.clone(),
                        route: route.name.clone(),
                        overflow: false,
                        configured: true,
                    };
                }
                // A service whose hosts match, without a matching route.
                if let Some(si) = self
                    .services
                    .iter()
                    .position(|s| !s.hosts.is_empty() && any_host(&s.hosts, host))
                {
                    return self.templated(Some(si), None, input.path);
                }
                self.templated(None, input.listener, input.path)
            }
            Role::Upstream => {
                let service = input.peer.and_then(|p| self.by_upstream.get(&p).copied());
                if let Some(si) = service {
                    if let Some(ri) =
                        self.match_route(host, input.method, input.path, Some(si), false)
                    {
                        return Routed {
                            service: self.services[si].templates.service.clone(),
                            route: self.routes[ri].name.clone(),
                            overflow: false,
                            configured: true,
                        };
                    }
                }
                self.templated(service, input.peer, input.path)
            }
        }
    }

    fn match_route(
        &self,
        host: Option<&str>,
        method: &str,
        path: &str,
        service: Option<usize>,
        check_hosts: bool,
    ) -> Option<usize> {
        self.prefixes.iter().find_map(|p| {
            let route = &self.routes[p.route];
            let ok = path.starts_with(&*p.prefix)
                && service.is_none_or(|s| route.service == s)
                && (route.methods.is_empty() || route.methods.iter().any(|m| **m == *method))
                && (!check_hosts || any_host(&route.hosts, host));
            ok.then_some(p.route)
        })
    }

    /// Route by template, within configured service `si` or else the
    /// service named by `addr`.
    fn templated(&mut self, si: Option<usize>, addr: Option<SocketAddr>, path: &str) -> Routed {
        template(path, &mut self.scratch);
        let templates = match (si, addr) {
            (Some(si), _) => &mut self.services[si].templates,
            (None, Some(addr)) => {
                let full = self.by_addr.len() >= MAX_AUTO_SERVICES;
                match self.by_addr.entry(addr) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(_) if full => {
                        return Routed {
                            service: self.other.clone(),
                            route: self.other.clone(),
                            overflow: true,
                            configured: false,
                        }
                    }
                    Entry::Vacant(e) => e.insert(Templates::new(Arc::from(addr.to_string()))),
                }
            }
            (None, None) => {
                // No address to name the service by: one shared bucket.
                let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
                self.by_addr
                    .entry(unknown)
                    .or_insert_with(|| Templates::new(Arc::from("unknown")))
            }
        };
        let service = templates.service.clone();
        if let Some(route) = templates.seen.get(self.scratch.as_str()) {
            return Routed {
                service,
                route: route.clone(),
                overflow: false,
                configured: false,
            };
        }
        if templates.seen.len() >= self.max_routes {
            return Routed {
                service,
                route: self.other.clone(),
                overflow: true,
                configured: false,
            };
        }
        let route: Arc<str> = Arc::from(self.scratch.as_str());
        templates.seen.insert(route.clone());
        Routed {
            service,
            route,
            overflow: false,
            configured: false,
        }
    }
}

/// `api.example.com:8080` -> `api.example.com`; `[::1]:8080` -> `[::1]`.
pub(super) fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Writes `path`'s template into `out`: each identifier-like segment
/// (numeric, UUID, hex of 16+ digits) becomes `{id}`.
pub fn template(path: &str, out: &mut String) {
    out.clear();
    if path.is_empty() {
        out.push('/');
        return;
    }
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_id(segment) { ID } else { segment });
        if out.len() > MAX_TEMPLATE_BYTES {
            let mut cut = MAX_TEMPLATE_BYTES;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            break;
        }
    }
}

fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[[service]]
name = "orders"
upstream = "127.0.0.1:9000"
hosts = ["api.example.com"]
  [[service.route]]
  name = "orders-all"
  paths = ["/orders"]
  [[service.route]]
  name = "orders-items"
  paths = ["/orders/items"]
  [[service.route]]
  name = "orders-write"
  paths = ["/orders"]
  methods = ["POST", "PUT"]

[[service]]
name = "admin"
  [[service.route]]
  name = "admin-any-host"
  paths = ["/admin"]
  [[service.route]]
  name = "admin-internal"
  paths = ["/admin"]
  hosts = ["*.internal", "ops.*"]

[[service]]
name = "catchall"
upstream = "127.0.0.1:9100"
hosts = ["catch.example.com"]
"#;

    fn router(max: usize) -> Router {
        let config = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        Router::from_config(Some(config), max)
    }

    fn down<'a>(host: Option<&'a str>, method: &'a str, path: &'a str) -> RouteInput<'a> {
        RouteInput {
            role: Role::Downstream,
            listener: Some("127.0.0.1:8080".parse().unwrap()),
            peer: None,
            host,
            method,
            path,
        }
    }

    fn up<'a>(peer: &str, method: &'a str, path: &'a str) -> RouteInput<'a> {
        RouteInput {
            role: Role::Upstream,
            listener: None,
            peer: Some(peer.parse().unwrap()),
            host: Some("backend"),
            method,
            path,
        }
    }

    fn names(r: &mut Router, input: RouteInput) -> (String, String) {
        let routed = r.route(&input);
        (routed.service.to_string(), routed.route.to_string())
    }

    fn pair(s: &str, r: &str) -> (String, String) {
        (s.to_owned(), r.to_owned())
    }

    #[test]
    fn longest_prefix_wins() {
        let mut r = router(100);
        let h = Some("api.example.com");
        assert_eq!(
            names(&mut r, down(h, "GET", "/orders/7")),
            pair("orders", "orders-all")
        );
        assert_eq!(
            names(&mut r, down(h, "GET", "/orders/items/7")),
            pair("orders", "orders-items")
        );
        // Kong's plain prefixes.
        assert_eq!(
            names(&mut r, down(h, "GET", "/orders-old")),
            pair("orders", "orders-all")
        );
    }

    #[test]
    fn methods_break_ties_and_filter() {
        let mut r = router(100);
        let h = Some("api.example.com");
        // Same prefix: the route with the extra method condition first.
        assert_eq!(
            names(&mut r, down(h, "POST", "/orders")),
            pair("orders", "orders-write")
        );
        assert_eq!(
            names(&mut r, down(h, "GET", "/orders")),
            pair("orders", "orders-all")
        );
        // A longer prefix still beats more conditions.
        assert_eq!(
            names(&mut r, down(h, "POST", "/orders/items")),
            pair("orders", "orders-items")
        );
    }

    #[test]
    fn hosts_filter_routes() {
        let mut r = router(100);
        // Service hosts apply to routes without their own; port and case ignored.
        assert_eq!(
            names(&mut r, down(Some("API.Example.com:8080"), "GET", "/orders")),
            pair("orders", "orders-all")
        );
        // Wrong host: falls back to the listener and a template.
        assert_eq!(
            names(&mut r, down(Some("other.example.com"), "GET", "/orders/12")),
            pair("127.0.0.1:8080", "/orders/{id}")
        );
        assert_eq!(
            names(&mut r, down(None, "GET", "/orders")),
            pair("127.0.0.1:8080", "/orders")
        );
        // Wildcards, both ends; more conditions beat none at equal length.
        assert_eq!(
            names(&mut r, down(Some("db.internal"), "GET", "/admin/x")),
            pair("admin", "admin-internal")
        );
        assert_eq!(
            names(&mut r, down(Some("ops.example.org"), "GET", "/admin")),
            pair("admin", "admin-internal")
        );
        assert_eq!(
            names(&mut r, down(Some("internal"), "GET", "/admin")),
            pair("admin", "admin-any-host")
        );
        assert_eq!(
            names(&mut r, down(None, "GET", "/admin")),
            pair("admin", "admin-any-host")
        );
    }

    #[test]
    fn service_hosts_without_routes_template_the_path() {
        let mut r = router(100);
        assert_eq!(
            names(&mut r, down(Some("catch.example.com."), "GET", "/a/42")),
            pair("catchall", "/a/{id}")
        );
    }

    #[test]
    fn upstream_exchanges_match_by_peer() {
        let mut r = router(100);
        assert_eq!(
            names(&mut r, up("127.0.0.1:9000", "GET", "/orders/items")),
            pair("orders", "orders-items")
        );
        assert_eq!(
            names(&mut r, up("127.0.0.1:9000", "PUT", "/orders/3")),
            pair("orders", "orders-write")
        );
        // The service's peer but no route: template within the service.
        assert_eq!(
            names(&mut r, up("127.0.0.1:9000", "GET", "/x/5")),
            pair("orders", "/x/{id}")
        );
        // Other services' routes are not considered.
        assert_eq!(
            names(&mut r, up("127.0.0.1:9100", "GET", "/admin")),
            pair("catchall", "/admin")
        );
        // Unknown peer: named by its address.
        assert_eq!(
            names(&mut r, up("10.0.0.9:80", "GET", "/orders")),
            pair("10.0.0.9:80", "/orders")
        );
    }

    #[test]
    fn without_config_names_by_address() {
        let mut r = Router::from_config(None, 100);
        assert_eq!(
            names(&mut r, down(Some("x"), "GET", "/")),
            pair("127.0.0.1:8080", "/")
        );
        assert_eq!(
            names(&mut r, up("[::1]:9000", "GET", "")),
            pair("[::1]:9000", "/")
        );
        let mut no_addr = down(None, "GET", "/a");
        no_addr.listener = None;
        assert_eq!(names(&mut r, no_addr), pair("unknown", "/a"));
    }

    #[test]
    fn templates_collapse_identifiers() {
        let cases = [
            ("/users/123/orders/4", "/users/{id}/orders/{id}"),
            ("/u/550e8400-e29b-41d4-a716-446655440000", "/u/{id}"),
            ("/u/550E8400-E29B-41D4-A716-446655440000/x", "/u/{id}/x"),
            ("/blob/0123456789abcdef", "/blob/{id}"),
            ("/blob/0123456789abcde", "/blob/0123456789abcde"),
            ("/blob/0123456789abcdeg0000", "/blob/0123456789abcdeg0000"),
            ("/v2/users/", "/v2/users/"),
            ("/a//b", "/a//b"),
            ("/123abc", "/123abc"),
            ("/", "/"),
            ("", "/"),
            ("*", "*"),
        ];
        let mut out = String::new();
        for (path, want) in cases {
            template(path, &mut out);
            assert_eq!(out, want, "{path}");
        }
        let long = format!("/{}", "é".repeat(400));
        template(&long, &mut out);
        assert!(out.len() <= MAX_TEMPLATE_BYTES && out.len() >= MAX_TEMPLATE_BYTES - 1);
    }

    #[test]
    fn cap_sends_new_templates_to_other() {
        let mut r = Router::from_config(None, 2);
        let a = r.route(&down(None, "GET", "/a/1"));
        assert_eq!((&*a.route, a.overflow), ("/a/{id}", false));
        assert!(!r.route(&down(None, "GET", "/b")).overflow);
        let c = r.route(&down(None, "GET", "/c"));
        assert_eq!(
            (&*c.service, &*c.route, c.overflow),
            ("127.0.0.1:8080", "other", true)
        );
        // Known templates still resolve, and hand out the same Arc.
        let a2 = r.route(&down(None, "GET", "/a/2"));
        assert_eq!((&*a2.route, a2.overflow), ("/a/{id}", false));
        assert!(Arc::ptr_eq(&a.route, &a2.route));
        // The cap is per service.
        let other_listener = RouteInput {
            listener: Some("127.0.0.1:8081".parse().unwrap()),
            ..down(None, "GET", "/c")
        };
        assert!(!r.route(&other_listener).overflow);
        // Configured routes never count against the cap.
        let mut r = router(0);
        assert!(
            !r.route(&down(Some("api.example.com"), "GET", "/orders"))
                .overflow
        );
        assert!(
            r.route(&down(Some("catch.example.com"), "GET", "/z"))
                .overflow
        );
    }

    #[test]
    fn address_named_services_are_bounded() {
        let mut r = Router::from_config(None, 1);
        for port in 0..MAX_AUTO_SERVICES as u16 {
            let input = RouteInput {
                listener: Some(SocketAddr::from(([127, 0, 0, 1], 10000 + port))),
                ..down(None, "GET", "/")
            };
            assert!(!r.route(&input).overflow);
        }
        let input = RouteInput {
            listener: Some("127.0.0.2:1".parse().unwrap()),
            ..down(None, "GET", "/")
        };
        let routed = r.route(&input);
        assert_eq!(
            (&*routed.service, &*routed.route, routed.overflow),
            ("other", "other", true)
        );
        assert_eq!(r.by_addr.len(), MAX_AUTO_SERVICES);
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.b.:80"), "a.b");
    }
}
