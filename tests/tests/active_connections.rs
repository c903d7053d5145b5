//! gatescope_downstream_connections{state="active"} follows idle client connections.

use anyhow::Result;
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::metrics::*;
use gatescope_tests::Scene;

#[test]
fn active_connections() -> Result<()> {
    const N: usize = 5;
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let base = agent.scrape()?;
    let active = base.get_or_zero(DOWN_CONNS, &[("state", "active")])?;
    let accepted = base.get_or_zero(ACCEPTED, &[])?;

    let mut client = scene.client();
    let idle = (0..N)
        .map(|_| client.idle_connection())
        .collect::<Result<Vec<_>>>()?;
    agent.wait_all(
        &[
            Expect::new(DOWN_CONNS, &[("state", "active")], active + N as f64),
            Expect::new(ACCEPTED, &[], accepted + N as f64),
        ],
        SETTLE_TIMEOUT,
    )?;

    // Close half, then the rest.
    let mut idle = idle;
    let rest = idle.split_off(2);
    drop(idle);
    agent.wait_for(
        DOWN_CONNS,
        &[("state", "active")],
        active + (N - 2) as f64,
        SETTLE_TIMEOUT,
    )?;
    drop(rest);
    agent.wait_all(
        &[
            Expect::new(DOWN_CONNS, &[("state", "active")], active),
            Expect::new(ACCEPTED, &[], accepted + N as f64),
        ],
        SETTLE_TIMEOUT,
    )?;

    // Connections that did carry a request count the same way.
    client.keep_alive(2, "/size/10")?;
    agent.wait_all(
        &[
            Expect::new(DOWN_CONNS, &[("state", "active")], active),
            Expect::new(ACCEPTED, &[], accepted + N as f64 + 1.0),
        ],
        SETTLE_TIMEOUT,
    )?;
    Ok(())
}
