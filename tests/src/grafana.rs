//! Dashboard queries as Grafana sends them to Prometheus:
//! deploy/grafana/gatescope.json's (tests/tests/dashboard.rs runs every one,
//! `cargo xtask demo --stack` a few) and tests/tests/kong_dashboard.rs's
//! stand-ins for Kong's 7424.

use serde_json::Value;
use std::collections::BTreeMap;

/// Every (panel title, query) of the dashboard, rows' nested panels too.
pub fn panel_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.to_owned(), expr.to_owned()));
                }
            }
            walk(
                p["panels"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                out,
            );
        }
    }
    let mut out = Vec::new();
    walk(
        dash["panels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        &mut out,
    );
    out
}

/// Replaces `$name` and `${name}` of each variable, longest names first
/// (so `$node` does not eat the start of `$nodes`), and Grafana's
/// `$__rate_interval` with `rate_interval`.
pub fn substitute(expr: &str, values: &BTreeMap<String, String>, rate_interval: &str) -> String {
    let mut out = expr.replace("$__rate_interval", rate_interval);
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    out
}

/// A label value inside `=~"..."`: regex metacharacters escaped, as Grafana
/// does for a single value of a multi-value variable; then the backslashes
/// doubled for the PromQL string.
pub fn regex_value(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_grafanas() {
        let mut v = BTreeMap::new();
        v.insert("node".to_owned(), "n1".to_owned());
        v.insert("nodes".to_owned(), "many".to_owned());
        assert_eq!(
            substitute(
                "rate(x{a=~\"$node\",b=~\"${nodes}\"}[$__rate_interval])",
                &v,
                "10s"
            ),
            "rate(x{a=~\"n1\",b=~\"many\"}[10s])"
        );
    }

    #[test]
    fn regex_values_are_escaped_for_promql() {
        assert_eq!(regex_value("/a/{id}"), "/a/\\\\{id\\\\}");
        assert_eq!(regex_value("127.0.0.1:80"), "127\\\\.0\\\\.0\\\\.1:80");
    }

    #[test]
    fn nested_panels_are_found() {
        let dash: Value = serde_json::from_str(
            r#"{"panels": [
                {"title": "a", "targets": [{"expr": "up"}, {"refId": "B"}]},
                {"title": "row", "panels": [{"title": "b", "targets": [{"expr": "x"}]}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            panel_queries(&dash),
            [("a".into(), "up".into()), ("b".into(), "x".into())]
        );
    }
}
