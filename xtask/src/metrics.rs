//! A reader for the Prometheus text format (0.0.4), enough to summarise a scrape.

pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// Parses every sample line; lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([' ', ',']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_string(), value));
            inner = &after[1 + end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Sum of the samples called `name` whose labels include `labels`; `None` if there are none.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.matches(name, labels))
        .map(|s| s.value)
        .reduce(|a, b| a + b)
}

/// The distinct values of label `key` over the samples called `name`, in order of appearance.
pub fn label_values(samples: &[Sample], name: &str, key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some(v) = s.label(key) {
            if !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_values() {
        let text = "# HELP x y\n# TYPE a counter\na 3\nb{peer=\"127.0.0.1:9\",direction=\"in\\\"x\"} 1.5e3 1700000000\nb{peer=\"127.0.0.1:9\",direction=\"out\",} 2\nc{} +Inf\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!(value(&s, "a", &[]), Some(3.0));
        assert_eq!(value(&s, "b", &[("direction", "in\"x")]), Some(1500.0));
        assert_eq!(value(&s, "b", &[("peer", "127.0.0.1:9")]), Some(1502.0));
        assert_eq!(value(&s, "b", &[("peer", "other")]), None);
        assert_eq!(label_values(&s, "b", "peer"), vec!["127.0.0.1:9"]);
        assert!(value(&s, "c", &[]).unwrap().is_infinite());
    }
}
