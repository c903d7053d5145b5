//! The status page at `/` (issue 14), loaded in headless Chromium (Debian's
//! `chromium`, installed by `cargo xtask setup`) as a person would load it:
//! the DOM Chromium built from it shows the same numbers as `/metrics` (each
//! route's requests, each upstream peer's calls by status, the gateway
//! processes observed), a path holding HTML is shown as text, and
//! `--status-page=false` turns it off.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{http_get, Agent};
use gatescope_tests::client::{Conn, Req};
use gatescope_tests::util::TempDir;
use gatescope_tests::AccuracyScene;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

/// The page's DOM as Chromium serialises it after loading `url`.
fn chromium_dom(url: &str) -> Result<String> {
    let profile = TempDir::new("chromium")?;
    // As root Chromium needs --no-sandbox; the network flags keep it from
    // calling out (this machine's network is closed).
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .context("running chromium (`cargo xtask setup` installs Debian's chromium)")?;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && dom.contains("</html>"),
        "chromium {}: {}\n{dom}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dom)
}

/// The rows of the table with `id`, each as its cells' text (tags
/// dropped, entities kept).
fn table(dom: &str, id: &str) -> Result<Vec<Vec<String>>> {
    let start = dom
        .find(&format!("<table id=\"{id}\""))
        .with_context(|| format!("no table {id}"))?;
    let end = start + dom[start..].find("</table>").context("unclosed table")?;
    let mut rows = Vec::new();
    for row in dom[start..end].split("<tr>").skip(1) {
        let cells: Vec<String> = row
            .split("<td")
            .skip(1)
            .map(|c| {
                let text = c.split_once('>').map_or("", |(_, t)| t);
                let text = text.split("</td>").next().unwrap_or_default();
                // Drop any markup inside the cell (the sparkline's SVG).
                let mut out = String::new();
                let mut inside = false;
                for ch in text.chars() {
                    match ch {
                        '<' => inside = true,
                        '>' => inside = false,
                        c if !inside => out.push(c),
                        _ => {}
                    }
                }
                out
            })
            .collect();
        if !cells.is_empty() {
            rows.push(cells);
        }
    }
    Ok(rows)
}

/// A request whose path holds HTML, written as bytes: clients would
/// percent-encode it, nginx takes it as it is.
fn html_path_request(port: u16) -> Result<()> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /<i>x</i> HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    ensure!(
        resp.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    Ok(())
}

#[test]
fn the_page_shows_the_metrics_numbers_and_escapes_paths() -> Result<()> {
    let scene = AccuracyScene::start(1)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let ep = scene.endpoint();
    let mut sent = 0;
    for (path, status, n) in [
        ("/size/100", 200, 7),
        ("/missing", 404, 3),
        ("/down", 502, 2),
    ] {
        for _ in 0..n {
            let mut c = Conn::open_at(ep)?;
            let s = c.exchange(Req::get(path).close())?;
            ensure!(s.status == status, "{path}: {}", s.status);
            c.close()?;
            sent += 1;
        }
    }
    html_path_request(scene.nginx.listen_port())?;
    sent += 1;
    // Every request counted before the page is read.
    let scrape = gatescope_tests::util::poll(Duration::from_secs(10), "the requests", || {
        let s = agent.scrape()?;
        let n: f64 = s
            .samples
            .iter()
            .filter(|x| x.name == "gatescope_http_requests_total")
            .map(|x| x.value)
            .sum();
        Ok((n == f64::from(sent)).then_some(s))
    })?;

    let dom = chromium_dom(&format!("http://{}/", agent.addr()))?;
    // The path is text, not markup.
    ensure!(
        dom.contains("/&lt;i&gt;x&lt;/i&gt;") && !dom.contains("<i>x</i>"),
        "the HTML path is not shown as text:\n{dom}"
    );

    // Each route's requests, as the metrics count them.
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    for x in scrape
        .samples
        .iter()
        .filter(|x| x.name == "gatescope_http_requests_total")
    {
        let key = (
            x.label("service").unwrap_or_default().to_owned(),
            x.label("route").unwrap_or_default().to_owned(),
        );
        *want.entry(key).or_default() += x.value;
    }
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    let mut shown: BTreeMap<(String, String), f64> = BTreeMap::new();
    for row in table(&dom, "routes")? {
        ensure!(row.len() >= 7, "routes row {row:?}");
        let requests: f64 = row[2].parse().with_context(|| format!("{row:?}"))?;
        // A rate over the window since the sample taken at start.
        let rate: f64 = row[3]
            .parse()
            .with_context(|| format!("req/s in {row:?}"))?;
        ensure!(rate >= 0.0, "{row:?}");
        shown.insert((unescape(&row[0]), unescape(&row[1])), requests);
    }
    ensure!(shown == want, "routes shown {shown:?}, metrics {want:?}");

    // Each upstream peer's calls by status.
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    for x in scrape
        .samples
        .iter()
        .filter(|x| x.name == "gatescope_http_upstream_requests_total")
    {
        let code = x.label("code").unwrap_or_default();
        let code = if code == "0" { "0 (no answer)" } else { code };
        want.insert(
            (
                x.label("peer").unwrap_or_default().to_owned(),
                code.to_owned(),
            ),
            x.value,
        );
    }
    let mut shown: BTreeMap<(String, String), f64> = BTreeMap::new();
    for row in table(&dom, "peers")? {
        ensure!(row.len() >= 3, "peers row {row:?}");
        shown.insert((row[0].clone(), row[1].clone()), row[2].parse()?);
    }
    ensure!(
        !shown.is_empty() && shown == want,
        "peers shown {shown:?}, metrics {want:?}"
    );

    // The processes observed.
    let targets = scrape.require("gatescope_target_processes", &[])?;
    ensure!(
        dom.contains(&format!("<span id=\"targets\">{targets}</span>")),
        "targets {targets} not shown"
    );

    // Turned off: no page.
    let off = Agent::start(&[scene.nginx.master_pid()], &["--status-page=false"])?;
    let (status, _) = http_get(off.addr(), "/")?;
    ensure!(status == 404, "--status-page=false: / answered {status}");
    Ok(())
}
