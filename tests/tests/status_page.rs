//! The status page (`lb run --http ADDR`) in a real headless Chromium: it shows the services,
//! reals and VRRP instances `lb backends --json` and `lb status --json` report, follows a health
//! check going down without being reloaded, fits a phone's screen, and loads fast. Screenshots
//! and measurements land in `target/test-artifacts/`.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_tests::{
    DrTopology, LbAgent, count_http, require_root, wait_until,
    webdriver::{Browser, require_browser},
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Held by the VRRP instance (not the service's VIP: the service stays active from the start).
const VRRP_VIP: &str = "192.0.2.200/32";
const PAGE: &str = "http://127.0.0.1:8080/";

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// `target/test-artifacts/` (or under `$CARGO_TARGET_DIR`).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    target.join("test-artifacts")
}

/// (service, real, state, weight) of every real, as the page shows them.
const PAGE_REALS: &str = "return [...document.querySelectorAll('#services tr[data-real]')].map(r => \
     [r.dataset.service, r.dataset.real, r.querySelector('.state').textContent, \
      r.querySelector('.weight').textContent]);";
/// (instance, state) of every VRRP instance on the page.
const PAGE_VRRP: &str = "return [...document.querySelectorAll('#vrrp tr[data-instance]')].map(r => \
     [r.dataset.instance, r.querySelector('.state').textContent]);";

type Rows = BTreeSet<Vec<String>>;

fn rows(v: &Value) -> Rows {
    let strings = |r: &Value| {
        r.as_array().map(|c| c.iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect())
    };
    v.as_array().into_iter().flatten().filter_map(strings).collect()
}

/// The same rows from `lb backends --json`.
fn cli_reals(agent: &LbAgent) -> Rows {
    let b = agent.backends().expect("lb backends --json");
    let mut out = Rows::new();
    for s in b["services"].as_array().into_iter().flatten() {
        let key = format!(
            "{}:{}/{}",
            s["vip"].as_str().unwrap_or_default(),
            s["port"],
            s["protocol"].as_str().unwrap_or_default()
        );
        for r in s["backends"].as_array().into_iter().flatten() {
            out.insert(vec![
                key.clone(),
                format!("{}:{}", r["address"].as_str().unwrap_or_default(), r["port"]),
                r["state"].as_str().unwrap_or_default().to_owned(),
                r["weight"].to_string(),
            ]);
        }
    }
    out
}

/// The same rows from `lb status --json`.
fn cli_vrrp(agent: &LbAgent) -> Rows {
    let s = agent.status().expect("lb status --json");
    let instances = s["vrrp"]["instances"].as_array().cloned().unwrap_or_default();
    instances
        .iter()
        .map(|i| {
            vec![
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["state"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect()
}

#[test]
fn status_page_in_a_browser_matches_the_cli_and_follows_a_check_going_down() {
    let name = "status page in chromium";
    if !require_root(name) || !require_browser(name) {
        return;
    }
    let dr = DrTopology::build("sp", 2, VIP, testpeer()).expect("topology");
    let mut conf = DrTopology::fast_tcp_check_config(VIP, 2);
    conf.push_str(&format!(
        "\n[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
         virtual_router_id = 61\npriority = 150\nadvert_int = 0.1\nversion = 3\nvirtual_ipaddress = [\"{VRRP_VIP}\"]\n"
    ));
    let (agent, _dir) = dr.start_agent(&conf, &["--http", "127.0.0.1:8080"]).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
    assert!(
        wait_until(Duration::from_secs(5), || agent.vrrp_state("VI_1").as_deref()
            == Some("MASTER")),
        "VI_1 never became MASTER"
    );

    let browser = Browser::start(&dr.director.ns, 1280, 900).expect("chromium");
    browser.navigate(PAGE).expect("load the page");
    // The page marks the moment its first data is on screen.
    let loaded = wait_until(Duration::from_secs(10), || {
        browser.execute("return performance.getEntriesByName('lb-first-data').length").ok()
            == Some(1.into())
    });
    assert!(loaded, "the page never showed data");
    let shown = |script| rows(&browser.execute(script).expect("script"));
    let want = cli_reals(&agent);
    assert_eq!(want.len(), 2, "{want:?}");
    assert!(
        wait_until(Duration::from_secs(5), || shown(PAGE_REALS) == cli_reals(&agent)),
        "page {:?} != lb backends {:?}",
        shown(PAGE_REALS),
        cli_reals(&agent)
    );
    assert_eq!(shown(PAGE_VRRP), cli_vrrp(&agent));
    assert_eq!(shown(PAGE_VRRP).len(), 1);

    // Traffic through the VIP shows in the service's packet-rate chart.
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 30);
    assert_eq!(counts.get("(failed)"), None, "{counts:?}");
    let rate = || {
        let v = browser.execute("return document.querySelector('#services .chart b').textContent");
        v.ok().and_then(|t| t.as_str().map(str::to_owned)).unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(6), || rate() != "0"), "packets/s stays {}", rate());

    // Measurements (BENCHMARKS.md): time to the first paint and to the first data, bytes loaded.
    let perf = browser
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];\
             const fcp = performance.getEntriesByName('first-contentful-paint')[0];\
             const api = performance.getEntriesByType('resource').filter(r => r.name.includes('/api/v1/status'))[0];\
             return { page_bytes: n.encodedBodySize, api_bytes: api ? api.encodedBodySize : null,\
                      first_contentful_paint_ms: fcp ? fcp.startTime : null,\
                      first_data_ms: performance.getEntriesByName('lb-first-data')[0].startTime,\
                      dom_content_loaded_ms: n.domContentLoadedEventEnd };",
        )
        .expect("performance entries");
    eprintln!("status page: {perf}");
    let dir = artifacts();
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    std::fs::write(dir.join("status-page-perf.json"), perf.to_string()).expect("perf file");
    assert!(perf["page_bytes"].as_u64().is_some_and(|b| b > 0 && b < 64 * 1024), "{perf}");
    browser.screenshot(&dir.join("status-page.png")).expect("screenshot");

    // A real's server dies: its check fails and the page shows it, without a reload.
    browser.execute("window.lbSamePage = true; return null").expect("mark the page");
    dr.peer(0).expect("rs1").signal(libc::SIGKILL).expect("kill rs1's server");
    let real = "192.0.2.11:80".to_owned();
    let down_on_page = || shown(PAGE_REALS).iter().any(|r| r[1] == real && r[2] == "down");
    assert!(wait_until(Duration::from_secs(10), down_on_page), "page: {:?}", shown(PAGE_REALS));
    assert_eq!(
        browser.execute("return window.lbSamePage === true").expect("script"),
        true,
        "reloaded"
    );
    assert!(
        wait_until(Duration::from_secs(5), || shown(PAGE_REALS) == cli_reals(&agent)),
        "page {:?} != lb backends {:?}",
        shown(PAGE_REALS),
        cli_reals(&agent)
    );
    // The agent samples every 2 s: the event follows within one sample and one poll.
    let event = "192.0.2.11:80: up → down";
    let events = || {
        let text = browser.execute("return document.getElementById('event-list').textContent");
        text.ok().and_then(|t| t.as_str().map(str::to_owned)).unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(6), || events().contains(event)), "{}", events());
    browser.screenshot(&dir.join("status-page-real-down.png")).expect("screenshot");

    // A phone: nothing wider than the screen.
    browser.resize(390, 844).expect("resize");
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        )
        .expect("widths");
    browser.screenshot(&dir.join("status-page-phone.png")).expect("screenshot");
    let culprits = browser
        .execute(
            "const w = document.documentElement.clientWidth;\
             return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w)\
               .map(e => e.tagName + '.' + e.className + '#' + e.id);",
        )
        .expect("widest elements");
    assert_eq!(overflow, 0, "the page is wider than a phone's screen: {culprits}");
}
