//! `stamp-load compare`: ticket-stamp against nginx on the same origin, the
//! same pages and the same load, in one run, and the ratios the product
//! promises (see benches/README.md). Optionally rewrites the results table in
//! the README between its `stamp-load` markers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use stamp_benches::nginx::{Nginx, NginxSpec};
use stamp_benches::paced::{self, Paced};
use stamp_benches::wrk::{self, Load, Measured};
use stamp_tests::{Origin, Proxy, RedisServer, Route};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Seconds each server of a scenario is loaded, in all
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Rounds the servers of a scenario group take turns in: each is loaded
    /// `seconds / rounds` at a time, round-robin, so the servers compared
    /// are measured seconds apart, not minutes, and a ratio is the median
    /// of the rounds' ratios
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Connections for the throughput and latency runs
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections for the memory run
    #[arg(long, default_value_t = 256)]
    many_connections: usize,
    /// Worker threads of stamp-proxy and worker processes of nginx (the same)
    #[arg(long, default_value_t = default_workers())]
    workers: usize,
    /// wrk threads
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// Promotions timed in the fleet run
    #[arg(long, default_value_t = 100)]
    fleet_rounds: usize,
    /// Size of the streamed page for the memory run, MiB
    #[arg(long, default_value_t = 50)]
    big_mib: usize,
    /// A quick pass that checks the harness works (CI): 1 s runs in one
    /// round, at most 8 (and 16) connections, few fleet rounds.
    /// Its figures are not results and it never writes the README.
    #[arg(long)]
    smoke: bool,
    /// Rewrite the results table in this README (between the
    /// `<!-- stamp-load:begin -->` and `<!-- stamp-load:end -->` markers)
    #[arg(long, value_name = "README.md")]
    write_readme: Option<PathBuf>,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The page sizes: an app shell, a server-rendered page and a listing.
const PAGES: [(&str, usize); 3] = [
    ("20 KB", 20 << 10),
    ("100 KB", 100 << 10),
    ("300 KB", 300 << 10),
];
const MODULE_PATH: &str = "/src/lib/m1.js";
const MODULE_BYTES: usize = 30 << 10;
const TICKET: &str = "BENCH-1";
/// Released to production on a second stamp-proxy: every page without a
/// selection gets its override (the overlay) until the origin ships it.
const RELEASED: &str = "BENCH-2";
/// A ticket rolling out to half of production's visitors.
const ROLLING: &str = "BENCH-3";

/// One closed-loop run: the figures plus the server's RSS during it.
#[derive(Debug, Clone, Copy)]
struct Run {
    m: Measured,
    /// Highest RSS sampled during the run, KiB (None for the origin).
    rss_kib: Option<u64>,
}

/// One server of a scenario, measured in turns with the others of its
/// group ([`Bench::turns`]).
struct Leg<'a> {
    scenario: String,
    server: &'static str,
    url: String,
    headers: &'a [(&'a str, &'a str)],
    pids: Option<Vec<u32>>,
}

impl<'a> Leg<'a> {
    fn new(
        scenario: impl Into<String>,
        server: &'static str,
        url: String,
        headers: &'a [(&'a str, &'a str)],
        pids: Option<Vec<u32>>,
    ) -> Self {
        Leg {
            scenario: scenario.into(),
            server,
            url,
            headers,
            pids,
        }
    }
}

/// What one leg measured, a run per round.
struct Turns(Vec<Run>);

impl Turns {
    /// The rounds as one run: requests, bytes and time summed, the median
    /// round's p50 and p99, the highest RSS.
    fn total(&self) -> Run {
        let mut m = Measured::default();
        for r in &self.0 {
            m.requests += r.m.requests;
            m.seconds += r.m.seconds;
            m.bytes += r.m.bytes;
        }
        m.p50_us = median(self.0.iter().map(|r| r.m.p50_us).collect());
        m.p99_us = median(self.0.iter().map(|r| r.m.p99_us).collect());
        let rss_kib = self.0.iter().filter_map(|r| r.rss_kib).max();
        Run { m, rss_kib }
    }

    fn rps(&self) -> f64 {
        self.total().m.rps()
    }
}

/// `a` against `b`, measured in the same rounds: the median of the rounds'
/// ratios, so one round the machine spent elsewhere moves nothing.
fn ratio(a: &Turns, b: &Turns) -> f64 {
    median(
        a.0.iter()
            .zip(&b.0)
            .map(|(x, y)| x.m.rps() / y.m.rps().max(1e-9))
            .collect(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Bench {
    opts: Opts,
    origin: Origin,
    proxy: Proxy,
    /// The same, with [`RELEASED`] in production.
    overlay: Proxy,
    /// The same, with [`ROLLING`] rolling out to 50%, and a visitor cookie
    /// of each side.
    rolling: Proxy,
    cookie_outside: String,
    cookie_inside: String,
    nginx: Nginx,
    floors: Floors,
    module_url: String,
    lines: Vec<String>,
}

/// One `stamp-floor` process, killed on drop.
struct FloorProcess {
    child: std::process::Child,
    url: String,
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FloorProcess {
    fn start(mode: &str, origin: &str, workers: usize) -> anyhow::Result<FloorProcess> {
        let port = stamp_tests::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(stamp_tests::proxy::binary("stamp-floor")?)
            .args([mode, "--listen", &listen, "--origin", origin])
            .args(["--threads", &workers.to_string()])
            .args(["--body-bytes", &MODULE_BYTES.to_string()])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting stamp-floor (cargo build --release --workspace --bins)")?;
        let floor = FloorProcess {
            child,
            url: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&listen).is_err() {
            ensure!(
                Instant::now() < deadline,
                "stamp-floor {mode} never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(floor)
    }

    fn pids(&self) -> Option<Vec<u32>> {
        Some(vec![self.child.id()])
    }
}

/// The bare-Pingora floors, built from this workspace (`stamp-floor`).
struct Floors {
    /// `upstream_peer` only.
    proxy: FloorProcess,
    /// The same plus lol_html with one no-op `script` handler.
    rewrite: FloorProcess,
    /// The bare proxy sending each page as a filter that may change its
    /// length must: copied through the body filter, chunked.
    rechunk: FloorProcess,
    /// A module body from memory.
    responder: FloorProcess,
}

/// Samples a process group's RSS every 50 ms while a run goes on.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(stamp_benches::sum_kib(&pids, "VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// The external-map app's page and map.
const EXT_PAGE: &str = "/extmap-20k";
const EXT_MAP: &str = "/extmap.json";

/// [`stamp_benches::page`] with its import map moved to [`EXT_MAP`], loaded
/// by SystemJS: the page and the map's text.
fn external_map_app(bytes: usize) -> (String, String) {
    let page = stamp_benches::page(bytes, 40);
    let start = page.find("<script type=\"importmap\">").unwrap_or(0);
    let open = "<script type=\"importmap\">".len();
    let end = page[start..].find("</script>").map_or(start, |e| start + e);
    let map = page[start + open..end].to_string();
    let page = format!(
        "{}<script type=\"systemjs-importmap\" src=\"{EXT_MAP}\"></script>{}",
        &page[..start],
        &page[end + "</script>".len()..]
    );
    (page, map)
}

/// The `src` of a page's SystemJS map, entities decoded.
fn external_map_src(page: &str) -> Option<String> {
    let rest = page.split("type=\"systemjs-importmap\" src=\"").nth(1)?;
    Some(rest.split('"').next()?.replace("&amp;", "&"))
}

const PAGE_HEADERS: &[(&str, &str)] = &[("accept", "text/html,application/xhtml+xml")];
const MODULE_HEADERS: &[(&str, &str)] = &[("accept", "*/*"), ("sec-fetch-dest", "script")];

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

impl Bench {
    fn say(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }

    /// One wrk run against `url` for `seconds`, sampling the RSS of
    /// `pids` meanwhile.
    fn run_for(
        &self,
        seconds: f64,
        url: &str,
        connections: usize,
        headers: &[(&str, &str)],
        pids: Option<Vec<u32>>,
    ) -> anyhow::Result<Run> {
        let sampler = pids.map(RssSampler::start);
        let m = wrk::run(&Load {
            url,
            connections,
            threads: self.opts.wrk_threads,
            duration: Duration::from_secs_f64(seconds),
            headers,
        })?;
        let rss_kib = sampler.map(RssSampler::finish);
        Ok(Run { m, rss_kib })
    }

    /// One wrk run against `url` for the whole `--seconds`.
    fn run(
        &self,
        url: &str,
        connections: usize,
        headers: &[(&str, &str)],
        pids: Option<Vec<u32>>,
    ) -> anyhow::Result<Run> {
        self.run_for(self.opts.seconds, url, connections, headers, pids)
    }

    /// The legs of a group loaded in turns: `--rounds` rounds, each leg
    /// `--seconds / --rounds` per round (wrk counts whole seconds), in the
    /// order given. On a shared machine the load of other tenants moves
    /// by a third over minutes; servers compared within a round are
    /// measured under the same. Prints a row per leg, in order.
    fn turns(&mut self, legs: &[Leg<'_>]) -> anyhow::Result<Vec<Turns>> {
        let rounds = self.opts.rounds.max(1);
        let each = (self.opts.seconds / rounds as f64).round().max(1.0);
        let mut out: Vec<Turns> = legs.iter().map(|_| Turns(Vec::new())).collect();
        for _ in 0..rounds {
            for (leg, turns) in legs.iter().zip(&mut out) {
                let run = self.run_for(
                    each,
                    &leg.url,
                    self.opts.connections,
                    leg.headers,
                    leg.pids.clone(),
                )?;
                turns.0.push(run);
            }
        }
        for (leg, turns) in legs.iter().zip(&out) {
            self.row(&leg.scenario, leg.server, &turns.total());
        }
        Ok(out)
    }

    fn proxy_pids(&self) -> Option<Vec<u32>> {
        self.proxy.pid().map(|p| vec![p])
    }

    fn overlay_pids(&self) -> Option<Vec<u32>> {
        self.overlay.pid().map(|p| vec![p])
    }

    fn rolling_pids(&self) -> Option<Vec<u32>> {
        self.rolling.pid().map(|p| vec![p])
    }

    fn nginx_pids(&self) -> Option<Vec<u32>> {
        Some(self.nginx.pids())
    }

    fn row(&mut self, scenario: &str, server: &str, r: &Run) {
        let rss = r.rss_kib.map_or_else(|| "–".to_string(), mib);
        self.say(format!(
            "| {scenario} | {server} | {:.0} | {:.0} | {} | {} | {rss} |",
            r.m.rps(),
            r.m.mib_per_s(),
            ms(r.m.p50_us),
            ms(r.m.p99_us),
        ));
    }
}

/// A line of the verdict: the figure, the target and whether it was met.
#[derive(Debug)]
struct Target {
    what: String,
    measured: String,
    target: String,
    met: bool,
}

/// Starts the origin, stamp-proxy (with the ticket) and nginx, and checks
/// that each answers what it should.
async fn setup(opts: Opts) -> anyhow::Result<(Bench, tempfile::TempDir)> {
    // Fail before starting anything if a tool is missing.
    wrk::binary()?;
    stamp_benches::nginx::binary()?;

    let origin = Origin::start()?;
    for (_, size) in PAGES {
        origin.route(
            &format!("/page-{}k", size >> 10),
            Route::html(&stamp_benches::page(size, 40)),
        );
        // The same page from an origin that validates (a strong ETag and
        // 304s), as static hosting and CDNs serve an app's index.html.
        origin.route(
            &format!("/page-{}k-etag", size >> 10),
            Route::html(&stamp_benches::page(size, 40))
                .header("etag", &format!("\"bench-{size}\""))
                .header("cache-control", "no-cache")
                .conditional(),
        );
    }
    // A body like most sites' (icons first; analytics, a bundle, a font
    // preload and page data at its end), at the two larger sizes.
    for size in [100 << 10, 300 << 10] {
        origin.route(
            &format!("/page-{}k-real", size >> 10),
            Route::html(&stamp_benches::page_real_body(size, 40)),
        );
    }
    // The 20 KB page from an origin that compresses it (gzip), as many
    // app servers and the servers in front of them do.
    origin.route(
        "/page-20k-gzip",
        Route::html(&stamp_benches::page(20 << 10, 40)).encoded(stamp_tests::Encoding::Gzip),
    );
    // The 20 KB page under a Content-Security-Policy header without
    // 'unsafe-inline', as hardened apps send: the proxy's map needs a nonce
    // made up for each response.
    origin.route(
        "/page-20k-csp",
        Route::html(&stamp_benches::page(20 << 10, 40)).header(
            "content-security-policy",
            "script-src 'self'; object-src 'none'",
        ),
    );
    // An external-map app (SystemJS): the same 20 KB page with its map at
    // a URL the origin lets browsers keep a minute, as map deployers do.
    let (ext_page, ext_map) = external_map_app(20 << 10);
    origin.route(EXT_PAGE, Route::html(&ext_page));
    origin.route(
        &format!("{EXT_PAGE}-etag"),
        Route::html(&ext_page)
            .header("etag", "\"bench-extmap-page\"")
            .header("cache-control", "no-cache")
            .conditional(),
    );
    origin.route(
        EXT_MAP,
        Route::bytes("application/importmap+json", ext_map.into_bytes())
            .header("etag", "\"bench-extmap-1\"")
            .header("cache-control", "public, max-age=60")
            .conditional(),
    );
    let origin_addr: std::net::SocketAddr = origin
        .url
        .trim_start_matches("http://")
        .parse()
        .context("origin address")?;

    // The ticket: one module of a realistic size, in the embedded store.
    let store_dir = tempfile::Builder::new().prefix("stamp-load").tempdir()?;
    let body = stamp_benches::module(MODULE_BYTES);
    let store = store_dir.path().join("store");
    stamp_tests::seed_dir(&store, TICKET, &[(MODULE_PATH, &body)]).await?;
    let module_url = stamp_tests::module_url(MODULE_PATH, &body);
    // The same file on disk for nginx.
    let static_root = store_dir.path().join("static");
    let file = static_root.join(MODULE_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().context("module path has a directory")?)?;
    std::fs::write(&file, &body)?;

    let workers = opts.workers.to_string();
    let proxy = Proxy::start_with(
        Some(&origin.url),
        &["--store", &store.to_string_lossy(), "--threads", &workers],
        &[("RUST_LOG", "warn")],
    )?;
    // A released ticket: uploaded, promoted to qa and released.
    let released_store = store_dir.path().join("store-released");
    stamp_tests::seed_dir(&released_store, RELEASED, &[(MODULE_PATH, &body)]).await?;
    {
        let s = stamp_tests::open_store(&released_store.to_string_lossy()).await?;
        for _ in 0..2 {
            stamp_tests::transition(&s, RELEASED, stamp_model::lifecycle::Transition::Promote)
                .await?;
        }
    }
    let overlay = Proxy::start_with(
        Some(&origin.url),
        &[
            "--store",
            &released_store.to_string_lossy(),
            "--threads",
            &workers,
        ],
        &[("RUST_LOG", "warn")],
    )?;
    // A ticket rolling out to half of production's visitors.
    let rolling_store = store_dir.path().join("store-rolling");
    stamp_tests::seed_dir(&rolling_store, ROLLING, &[(MODULE_PATH, &body)]).await?;
    {
        let s = stamp_tests::open_store(&rolling_store.to_string_lossy()).await?;
        stamp_tests::transition(&s, ROLLING, stamp_model::lifecycle::Transition::Promote).await?;
        stamp_tests::release_by_steps(&s, ROLLING, 50).await?;
    }
    let rolling = Proxy::start_with(
        Some(&origin.url),
        &[
            "--store",
            &rolling_store.to_string_lossy(),
            "--threads",
            &workers,
        ],
        &[("RUST_LOG", "warn")],
    )?;
    let key = stamp_model::TicketKey::parse(ROLLING)?;
    let side = |inside: bool| {
        (0u128..)
            .map(stamp_model::rollout::visitor_id_from)
            .find(|v| stamp_model::rollout::in_slice(&key, v, 50) == inside)
            .map(|v| format!("{}={v}", stamp_model::rollout::VISITOR_COOKIE))
            .unwrap_or_default()
    };
    let (cookie_outside, cookie_inside) = (side(false), side(true));
    let nginx = Nginx::start(&NginxSpec {
        origin: origin_addr,
        workers: opts.workers,
        static_root,
        head_snippet: format!(
            "<script type=\"importmap\">{{\"imports\":{{\"{MODULE_PATH}\":\"{module_url}\"}}}}</script>"
        ),
    })?;

    let origin_hostport = origin_addr.to_string();
    let floors = Floors {
        proxy: FloorProcess::start("proxy", &origin_hostport, opts.workers)?,
        rewrite: FloorProcess::start("rewrite", &origin_hostport, opts.workers)?,
        rechunk: FloorProcess::start("rechunk", &origin_hostport, opts.workers)?,
        responder: FloorProcess::start("responder", &origin_hostport, opts.workers)?,
    };
    let b = Bench {
        opts,
        origin,
        proxy,
        overlay,
        rolling,
        cookie_outside,
        cookie_inside,
        nginx,
        floors,
        module_url,
        lines: Vec::new(),
    };
    check_outputs(&b, &body).await?;
    Ok((b, store_dir))
}

/// Starts everything and waits for Ctrl-C: for profiling one server by hand
/// (`perf record -p PID`) under a load of your choosing.
pub async fn serve(opts: Opts) -> anyhow::Result<()> {
    let (b, _dir) = setup(opts).await?;
    println!("origin            {}/page-20k  /page-300k", b.origin.url);
    println!(
        "stamp-proxy       {}/page-20k?dev={TICKET}   (pid {})",
        b.proxy.url,
        b.proxy.pid().unwrap_or(0)
    );
    println!("stamp module      {}", b.proxy.url(&b.module_url));
    println!(
        "overlay proxy     {}/page-20k   (pid {}; {RELEASED} released)",
        b.overlay.url,
        b.overlay.pid().unwrap_or(0)
    );
    println!(
        "nginx proxy_pass  {}   (pids {:?})",
        b.nginx.proxy_pass,
        b.nginx.pids()
    );
    println!("nginx sub_filter  {}", b.nginx.sub_filter);
    println!("nginx static      {}{MODULE_PATH}", b.nginx.static_files);
    for (name, f) in [
        ("floor proxy", &b.floors.proxy),
        ("floor rewrite", &b.floors.rewrite),
        ("floor rechunk", &b.floors.rechunk),
        ("floor responder", &b.floors.responder),
    ] {
        println!("{name:<17} {}   (pid {})", f.url, f.child.id());
    }
    println!("Ctrl-C (or SIGTERM) stops everything.");
    // Either way the servers are dropped, so each one is stopped: a
    // `kill` of this process must not leave them running.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub async fn run(mut opts: Opts) -> anyhow::Result<()> {
    if opts.smoke {
        // A second each, with few connections: CI runs the debug build, where
        // 256 connections on a 300 KB stamped page finish nothing in a second
        // (8 finish about 90 requests).
        opts.seconds = opts.seconds.min(1.0);
        opts.rounds = 1;
        opts.connections = opts.connections.min(8);
        opts.many_connections = opts.many_connections.min(16);
        opts.fleet_rounds = opts.fleet_rounds.min(5);
        opts.write_readme = None;
    }
    let (mut b, _dir) = setup(opts).await?;

    let started = utc_now();
    b.say(format!(
        "stamp-load compare: {} s per server, in {} rounds taken in turns with the other servers of its scenario group (req/s over all rounds; p50 and p99 of the median round; each ratio below is the median of the rounds' ratios), {} connections (wrk -t{}), {} stamp-proxy threads / nginx workers{}",
        b.opts.seconds,
        b.opts.rounds.max(1),
        b.opts.connections,
        b.opts.wrk_threads,
        b.opts.workers,
        if b.opts.smoke { " — SMOKE PASS, figures are not results" } else { "" }
    ));
    b.say(String::new());
    b.say("| scenario | server | req/s | MiB/s | p50 ms | p99 ms | RSS MiB |".into());
    b.say("|---|---|---:|---:|---:|---:|---:|".into());

    let c = b.opts.connections;
    let mut targets = Vec::new();
    let mut stamped_rps = Vec::new();
    for (label, size) in PAGES {
        let path = format!("/page-{}k", size >> 10);
        let etag_path = format!("{path}-etag");
        let dev = format!("{path}?dev={TICKET}");
        let pass_s = format!("{label} page, passthrough");
        let stamped_s = format!("{label} page, stamped");
        let (cookie_outside, cookie_inside) = (b.cookie_outside.clone(), b.cookie_inside.clone());
        let outside = [PAGE_HEADERS[0], ("cookie", cookie_outside.as_str())];
        let inside = [PAGE_HEADERS[0], ("cookie", cookie_inside.as_str())];
        let legs = [
            Leg::new(
                &pass_s,
                "origin direct",
                format!("{}{path}", b.origin.url),
                PAGE_HEADERS,
                None,
            ),
            Leg::new(
                &pass_s,
                "floor: bare Pingora",
                format!("{}{path}", b.floors.proxy.url),
                PAGE_HEADERS,
                b.floors.proxy.pids(),
            ),
            Leg::new(
                &pass_s,
                "stamp-proxy",
                b.proxy.url(&path),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            Leg::new(
                &pass_s,
                "nginx proxy_pass",
                format!("{}{path}", b.nginx.proxy_pass),
                PAGE_HEADERS,
                b.nginx_pids(),
            ),
            Leg::new(
                &stamped_s,
                "stamp-proxy `?dev=`",
                b.proxy.url(&dev),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            Leg::new(
                &stamped_s,
                "floor: Pingora + lol_html, one no-op handler",
                format!("{}{path}", b.floors.rewrite.url),
                PAGE_HEADERS,
                b.floors.rewrite.pids(),
            ),
            Leg::new(
                &stamped_s,
                "floor: bare Pingora, body copied and chunked",
                format!("{}{path}", b.floors.rechunk.url),
                PAGE_HEADERS,
                b.floors.rechunk.pids(),
            ),
            Leg::new(
                &stamped_s,
                "nginx sub_filter",
                format!("{}{path}", b.nginx.sub_filter),
                PAGE_HEADERS,
                b.nginx_pids(),
            ),
            // Beyond the floor: the stamped-page cache, on a validating origin.
            Leg::new(
                format!("{label} page, validating origin"),
                "stamp-proxy passthrough",
                b.proxy.url(&etag_path),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            Leg::new(
                format!("{label} page, validating origin"),
                "stamp-proxy `?dev=`, page cache (origin 304)",
                b.proxy.url(&format!("{etag_path}?dev={TICKET}")),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            // A release: production pages themselves are stamped (the
            // overlay), from the page cache when the origin validates.
            Leg::new(
                format!("{label} page, released ticket"),
                "stamp-proxy, production page with the overlay",
                b.overlay.url(&path),
                PAGE_HEADERS,
                b.overlay_pids(),
            ),
            Leg::new(
                format!("{label} page, released ticket, validating origin"),
                "stamp-proxy, overlay from the page cache (origin 304)",
                b.overlay.url(&etag_path),
                PAGE_HEADERS,
                b.overlay_pids(),
            ),
            // A ticket rolling out to 50%: what each side of it costs. The
            // production side is production (private, varying by cookie);
            // the ticket's side is stamped like a release.
            Leg::new(
                format!("{label} page, ticket rolling out (50%)"),
                "stamp-proxy, a visitor on production's side",
                b.rolling.url(&path),
                &outside,
                b.rolling_pids(),
            ),
            Leg::new(
                format!("{label} page, ticket rolling out (50%)"),
                "stamp-proxy, a visitor on the ticket's side",
                b.rolling.url(&path),
                &inside,
                b.rolling_pids(),
            ),
        ];
        let t = b.turns(&legs)?;
        let [_direct, bare, pass, ngx, stamped, lol, rechunk, sub, pass_v, cached, released, released_v, production_side, ticket_side] =
            &t[..]
        else {
            unreachable!("one Turns per leg");
        };
        for (what, r, goal) in [
            (format!("passthrough vs bare Pingora, {label}"), ratio(pass, bare), 1.0),
            (format!("stamped vs Pingora + lol_html, {label}"), ratio(stamped, lol), 0.9),
            (format!("passthrough vs nginx proxy_pass, {label}"), ratio(pass, ngx), 0.9),
            (format!("stamped vs nginx sub_filter, {label}"), ratio(stamped, sub), 1.0),
            (
                format!("stamped from the page cache vs passthrough, validating origin, {label}"),
                ratio(cached, pass_v),
                0.9,
            ),
            // Issue 30: an origin without validators, overrides that touch
            // only the map: early exit streams everything after `<body>`
            // untouched.
            (format!("stamped vs passthrough, no validators, {label}"), ratio(stamped, pass), 0.9),
            (
                format!("released ticket (overlay) vs passthrough, no validators, {label}"),
                ratio(released, pass),
                0.9,
            ),
            // How much of the 0.9× above any rewrite can reach on Pingora:
            // a filter that changes no byte but may change the length.
            (
                format!("floor: body copied and chunked vs passthrough, {label}"),
                ratio(rechunk, pass),
                0.9,
            ),
            (
                format!("released ticket (overlay) vs body copied and chunked, {label}"),
                ratio(released, rechunk),
                0.9,
            ),
            (format!("stamped vs nginx sub_filter (issue 30 goal), {label}"), ratio(stamped, sub), 0.5),
            (
                format!("released ticket (overlay) from the page cache vs passthrough, validating origin, {label}"),
                ratio(released_v, pass_v),
                0.9,
            ),
            (
                format!("production's side of a rollout vs production without one, {label}"),
                ratio(production_side, pass),
                0.95,
            ),
            (
                format!("the ticket's side of a rollout vs a released ticket, {label}"),
                ratio(ticket_side, released),
                0.9,
            ),
        ] {
            targets.push(ratio_target(what, r, goal));
        }
        stamped_rps.push((label, path.clone(), pass.rps().min(stamped.rps())));
    }
    // Issue 30, item 2: production page views of an external-map app, with
    // a released ticket against the same without one. A browser keeps the
    // map as long as the origin allows, so a view is the page; what the
    // browser-like client below fetches says what the map costs.
    for (scenario, path) in [
        ("20 KB external-map page (SystemJS)", EXT_PAGE.to_string()),
        (
            "20 KB external-map page (SystemJS), validating origin",
            format!("{EXT_PAGE}-etag"),
        ),
    ] {
        let legs = [
            Leg::new(
                scenario,
                "stamp-proxy, production without a release",
                b.proxy.url(&path),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            Leg::new(
                scenario,
                "stamp-proxy, production with a released ticket",
                b.overlay.url(&path),
                PAGE_HEADERS,
                b.overlay_pids(),
            ),
        ];
        let t = b.turns(&legs)?;
        targets.push(ratio_target(
            format!("{scenario}: views with a released ticket vs without one"),
            ratio(&t[1], &t[0]),
            0.95,
        ));
    }

    // What a browser sends: every page above is asked without an
    // `Accept-Encoding`. A rewritten page goes out in the origin's coding,
    // so an origin that sends HTML as it is costs a release no compression,
    // and one that compresses costs a decode and an encode per page.
    const BROWSER: &[(&str, &str)] = &[
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
    ];
    for (scenario, path) in [
        ("20 KB page, a browser's Accept-Encoding", "/page-20k"),
        (
            "20 KB page, a browser's Accept-Encoding, gzip origin",
            "/page-20k-gzip",
        ),
        (
            "20 KB page, a browser's Accept-Encoding, a strict CSP header",
            "/page-20k-csp",
        ),
    ] {
        let legs = [
            Leg::new(
                scenario,
                "stamp-proxy passthrough",
                b.proxy.url(path),
                BROWSER,
                b.proxy_pids(),
            ),
            Leg::new(
                scenario,
                "stamp-proxy, production page with the overlay",
                b.overlay.url(path),
                BROWSER,
                b.overlay_pids(),
            ),
        ];
        let t = b.turns(&legs)?;
        targets.push(ratio_target(
            format!("released ticket (overlay) vs passthrough, {scenario}"),
            ratio(&t[1], &t[0]),
            0.9,
        ));
    }

    // Pages whose body ends the way most sites' do: starts after `<body>`
    // (scripts, a preload, a meta), none of them the ticket's, which the
    // rewriter leaps over unread.
    for (label, size) in [("100 KB", 100 << 10), ("300 KB", 300 << 10)] {
        let path = format!("/page-{}k-real", size >> 10);
        let scenario = format!("{label} page, scripts at the end of its body");
        let legs = [
            Leg::new(
                &scenario,
                "stamp-proxy passthrough",
                b.proxy.url(&path),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            Leg::new(
                &scenario,
                "stamp-proxy `?dev=`",
                b.proxy.url(&format!("{path}?dev={TICKET}")),
                PAGE_HEADERS,
                b.proxy_pids(),
            ),
            Leg::new(
                &scenario,
                "stamp-proxy, production page with the overlay",
                b.overlay.url(&path),
                PAGE_HEADERS,
                b.overlay_pids(),
            ),
        ];
        let t = b.turns(&legs)?;
        targets.push(ratio_target(
            format!("released ticket (overlay) vs passthrough, {scenario}"),
            ratio(&t[2], &t[0]),
            0.9,
        ));
        targets.push(ratio_target(
            format!("stamped vs passthrough, {scenario}"),
            ratio(&t[1], &t[0]),
            0.9,
        ));
    }

    let legs = [
        // A released ticket's module, as every production page gets it
        // (a ticket's other files are answered the same way, but kept by
        // no cache).
        Leg::new(
            "30 KB module body",
            "stamp-proxy",
            b.overlay.url(&b.module_url),
            MODULE_HEADERS,
            b.overlay_pids(),
        ),
        Leg::new(
            "30 KB module body",
            "floor: Pingora answering from memory",
            format!("{}{MODULE_PATH}", b.floors.responder.url),
            MODULE_HEADERS,
            b.floors.responder.pids(),
        ),
        Leg::new(
            "30 KB module body",
            "nginx static file",
            format!("{}{MODULE_PATH}", b.nginx.static_files),
            MODULE_HEADERS,
            b.nginx_pids(),
        ),
    ];
    let t = b.turns(&legs)?;
    targets.push(ratio_target(
        "module body vs bare Pingora responder".into(),
        ratio(&t[0], &t[1]),
        0.9,
    ));
    targets.push(ratio_target(
        "module body vs nginx static".into(),
        ratio(&t[0], &t[2]),
        1.0,
    ));
    let many = b.opts.many_connections;
    let mut crowd_rss = Vec::new();
    for (label, size) in PAGES {
        let path = format!("/page-{}k", size >> 10);
        let scenario = format!("{label} page, stamped, {many} connections");
        let crowd = b.run(
            &b.proxy.url(&format!("{path}?dev={TICKET}")),
            many,
            PAGE_HEADERS,
            b.proxy_pids(),
        )?;
        b.row(&scenario, "stamp-proxy `?dev=`", &crowd);
        let crowd_ngx = b.run(
            &format!("{}{path}", b.nginx.sub_filter),
            many,
            PAGE_HEADERS,
            b.nginx_pids(),
        )?;
        b.row(&scenario, "nginx sub_filter", &crowd_ngx);
        let crowd_floor = b.run(
            &format!("{}{path}", b.floors.rewrite.url),
            many,
            PAGE_HEADERS,
            b.floors.rewrite.pids(),
        )?;
        b.row(
            &scenario,
            "floor: Pingora + lol_html, one no-op handler",
            &crowd_floor,
        );
        let rss = crowd.rss_kib.unwrap_or_default();
        targets.push(Target {
            what: format!("stamp-proxy RSS at {many} connections, {label} stamped page"),
            measured: format!("{} MiB", mib(rss)),
            target: "< 64 MiB".into(),
            met: rss < 64 * 1024,
        });
        crowd_rss.push((rss, crowd_floor.rss_kib.unwrap_or_default()));
    }
    if let [(small, small_floor), (large, large_floor)] = crowd_rss[..] {
        let growth = large.saturating_sub(small);
        let floor_growth = large_floor.saturating_sub(small_floor);
        targets.push(Target {
            what: format!("RSS flat in page size at {many} connections (20 KB → 300 KB stamped)"),
            measured: format!("+{} MiB (floor: +{} MiB)", mib(growth), mib(floor_growth)),
            target: "flat (< +4 MiB)".into(),
            met: growth < 4 * 1024,
        });
    }

    // Added latency at a rate both paths carry.
    b.say(String::new());
    b.say(format!(
        "Latency at a fixed rate, {c} connections (paced, counted from when each request was due):"
    ));
    b.say(String::new());
    b.say("| page | rate req/s | server | passthrough p50 / p99 ms | stamped p50 / p99 ms | added p99 ms |".into());
    b.say("|---|---:|---|---:|---:|---:|".into());
    for (label, path, capacity) in stamped_rps {
        // A quarter of what the slower path sustained: busy, but far enough
        // from saturation that the figure is the rewrite's own time, not a
        // queue (on 2 shared cores, half of capacity already queues).
        let rate = (capacity * 0.25).max(10.0).round();
        for (server, pass_url, stamped_url) in [
            (
                "stamp-proxy",
                b.proxy.url(&path),
                b.proxy.url(&format!("{path}?dev={TICKET}")),
            ),
            (
                "nginx",
                format!("{}{path}", b.nginx.proxy_pass),
                format!("{}{path}", b.nginx.sub_filter),
            ),
        ] {
            let pace = |url| Paced {
                url,
                connections: c,
                rate,
                duration: Duration::from_secs_f64(b.opts.seconds),
                headers: PAGE_HEADERS,
            };
            let p = paced::run(&pace(&pass_url)).await?;
            let s = paced::run(&pace(&stamped_url)).await?;
            let added = s.pct(0.99).as_secs_f64() * 1e3 - p.pct(0.99).as_secs_f64() * 1e3;
            b.say(format!(
                "| {label} | {rate:.0} | {server} | {:.2} / {:.2} | {:.2} / {:.2} | {added:+.2} |",
                p.pct(0.5).as_secs_f64() * 1e3,
                p.pct(0.99).as_secs_f64() * 1e3,
                s.pct(0.5).as_secs_f64() * 1e3,
                s.pct(0.99).as_secs_f64() * 1e3,
            ));
            if server == "stamp-proxy" {
                targets.push(Target {
                    what: format!(
                        "p99 added by stamping, {label}, {c} connections at {rate:.0} req/s"
                    ),
                    measured: format!("{added:+.2} ms"),
                    target: "< 1 ms".into(),
                    met: added < 1.0,
                });
            }
        }
    }

    b.say(String::new());
    external_map_views(&mut b).await?;
    ttfb(&mut b).await?;
    b.say(String::new());
    memory(&mut b, &mut targets).await?;
    b.say(String::new());
    let rewriter = rewriter_ratio(&mut b);
    targets.extend(rewriter);
    b.say(String::new());
    fleet(&mut b).await?;

    b.say(String::new());
    b.say("| target | measured | goal | met |".into());
    b.say("|---|---:|---:|:---:|".into());
    for t in &targets {
        b.say(format!(
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.target,
            if t.met { "yes" } else { "**no**" }
        ));
    }
    if let Some(readme) = b.opts.write_readme.clone() {
        write_readme(&readme, &started, &b)?;
        println!("\nwrote the results into {}", readme.display());
    }
    Ok(())
}

fn ratio_target(what: String, r: f64, goal: f64) -> Target {
    Target {
        what,
        measured: format!("{r:.2}×"),
        target: format!("≥ {}×", trim_goal(goal)),
        met: r >= goal,
    }
}

/// `0.9`, `0.95`, `1.0`: a goal with the digits it has.
fn trim_goal(goal: f64) -> String {
    let two = format!("{goal:.2}");
    match two.strip_suffix('0') {
        Some(one) => one.to_string(),
        None => two,
    }
}

/// A benchmark of wrong answers measures nothing: before any load, check that
/// each server gives what it is supposed to.
async fn check_outputs(b: &Bench, module_body: &str) -> anyhow::Result<()> {
    let client = stamp_tests::client();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let resp = client
                .get(&url)
                .header("accept", "text/html")
                .send()
                .await?;
            ensure!(resp.status().is_success(), "{url}: {}", resp.status());
            anyhow::Ok(resp.text().await?)
        }
    };
    let path = "/page-20k";
    let original = get(format!("{}{path}", b.origin.url)).await?;
    ensure!(
        get(b.proxy.url(path)).await? == original,
        "stamp-proxy passthrough changed the page"
    );
    ensure!(
        get(format!("{}{path}", b.nginx.proxy_pass)).await? == original,
        "nginx proxy_pass changed the page"
    );
    ensure!(
        get(format!("{}{path}", b.floors.rechunk.url)).await? == original,
        "the re-chunking floor changed the page"
    );
    let stamped = get(b.proxy.url(&format!("{path}?dev={TICKET}"))).await?;
    ensure!(
        points_at(&stamped, &b.module_url),
        "the stamped page does not point at the ticket's module"
    );
    // The page cache answers the second load of a validating page, with
    // the same stamped bytes.
    let info = answered_again(&client, &b.proxy.url(&format!("{path}-etag?dev={TICKET}"))).await?;
    ensure!(
        info.ends_with("; cached"),
        "the page cache did not answer: {info}"
    );
    // The released ticket's proxy stamps production pages, and serves the
    // second load of a validating one from the page cache.
    let released = get(b.overlay.url(path)).await?;
    ensure!(
        points_at(&released, &b.module_url),
        "the production page does not carry the released ticket's module"
    );
    let info = answered_again(&client, &b.overlay.url(&format!("{path}-etag"))).await?;
    ensure!(
        info.starts_with("overlay") && info.ends_with("; cached"),
        "the page cache did not answer the released page: {info}"
    );
    // The external-map app: production's page names production's map; the
    // released ticket's names the merged variant, which carries the module.
    let ext = get(b.proxy.url(EXT_PAGE)).await?;
    ensure!(
        ext.contains(&format!("src=\"{EXT_MAP}\"")),
        "production's external map moved"
    );
    let ext_released = get(b.overlay.url(EXT_PAGE)).await?;
    let merged = external_map_src(&ext_released)
        .filter(|src| src.starts_with("/__stamp/map?"))
        .context("the released ticket's page names no merged map")?;
    ensure!(
        get(b.overlay.url(&merged)).await?.contains(&b.module_url),
        "the merged map does not carry the released ticket's module"
    );
    // The rollout's two sides: the module on the ticket's, none on production's.
    let with_cookie = |cookie: &str| {
        let url = b.rolling.url(path);
        let cookie = cookie.to_string();
        let client = client.clone();
        async move {
            anyhow::Ok(
                client
                    .get(url)
                    .header("accept", "text/html")
                    .header("cookie", cookie)
                    .send()
                    .await?
                    .text()
                    .await?,
            )
        }
    };
    ensure!(
        points_at(&with_cookie(&b.cookie_inside).await?, &b.module_url),
        "the ticket's side of the rollout does not carry its module"
    );
    ensure!(
        !with_cookie(&b.cookie_outside).await?.contains("__ts="),
        "production's side of the rollout carries a ticket URL"
    );
    let sub = get(format!("{}{path}", b.nginx.sub_filter)).await?;
    ensure!(
        sub.contains(&b.module_url),
        "nginx sub_filter did not inject its script"
    );
    ensure!(
        // JavaScript is served with the probe's marker after its code.
        stamp_tests::without_marker(&get(b.proxy.url(&b.module_url)).await?) == module_body,
        "stamp-proxy module body differs"
    );
    ensure!(
        get(format!("{}{MODULE_PATH}", b.nginx.static_files)).await? == module_body,
        "nginx static module body differs"
    );
    Ok(())
}

/// Whether a stamped page gets the ticket's module (by its map or an entry).
fn points_at(page: &str, module_url: &str) -> bool {
    let in_map =
        stamp_tests::import_map(page).is_ok_and(|map| map["imports"][MODULE_PATH] == module_url);
    in_map || page.contains(module_url)
}

/// Loads `url` twice; the second answer's `x-ticket-stamp`, once its bytes
/// are checked to be the first's.
async fn answered_again(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let load = || client.get(url).header("accept", "text/html").send();
    let first = load().await?;
    ensure!(first.status().is_success(), "{url}: {}", first.status());
    let first = first.text().await?;
    let again = load().await?;
    let info = again
        .headers()
        .get("x-ticket-stamp")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        again.text().await? == first,
        "{url}: the second load differs"
    );
    Ok(info)
}

/// What the external map costs production, as a browser sees it: 20 page
/// views by a client that keeps what `Cache-Control` lets it keep (and
/// revalidates with the tag it got), without a release and with one; the
/// origin's map fetches and the map bytes the client downloaded.
async fn external_map_views(b: &mut Bench) -> anyhow::Result<()> {
    const VIEWS: usize = 20;
    let client = stamp_tests::client();
    let mut rows = Vec::new();
    for (server, proxy) in [
        ("production without a release", &b.proxy),
        ("production with a released ticket", &b.overlay),
    ] {
        let before = b.origin.hits(EXT_MAP);
        // URL → (body, etag, fresh until).
        let mut cache: std::collections::HashMap<String, (String, Option<String>, Instant)> =
            Default::default();
        let mut bytes = 0usize;
        for _ in 0..VIEWS {
            let page = client
                .get(proxy.url(EXT_PAGE))
                .header("accept", "text/html")
                .send()
                .await?
                .text()
                .await?;
            let src = external_map_src(&page).context("the page names no external map")?;
            let url = proxy.url(&src);
            if cache
                .get(&url)
                .is_some_and(|(_, _, until)| Instant::now() < *until)
            {
                continue;
            }
            let mut req = client.get(&url);
            if let Some(tag) = cache.get(&url).and_then(|(_, t, _)| t.clone()) {
                req = req.header("if-none-match", tag);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (tag, cc) = (header("etag"), header("cache-control").unwrap_or_default());
            let max_age = if cc.contains("no-store") || cc.contains("no-cache") {
                0
            } else {
                cc.split(',')
                    .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let until = Instant::now() + Duration::from_secs(max_age);
            let body = resp.text().await?;
            bytes += body.len();
            match status {
                304 => {
                    if let Some(entry) = cache.get_mut(&url) {
                        entry.2 = until;
                    }
                }
                200 => {
                    if !cc.contains("no-store") {
                        cache.insert(url, (body, tag, until));
                    }
                }
                other => bail!("{url}: {other}"),
            }
        }
        rows.push((server, b.origin.hits(EXT_MAP) - before, bytes));
    }
    b.say(format!(
        "External map (SystemJS, served `public, max-age=60` with a strong ETag): {VIEWS} page views by a client that keeps what `Cache-Control` allows:"
    ));
    b.say(String::new());
    b.say("| production | origin map fetches | map bytes downloaded |".into());
    b.say("|---|---:|---:|".into());
    for (server, fetches, bytes) in rows {
        b.say(format!("| {server} | {fetches} | {bytes} |"));
    }
    b.say(String::new());
    Ok(())
}

/// Time to the first body byte of a page whose origin sends the head at once
/// and the rest 2 s later: a buffering proxy would show 2 s.
async fn ttfb(b: &mut Bench) -> anyhow::Result<()> {
    b.say("Streaming: a page whose head comes at once and whose rest comes 2 s later:".into());
    b.say(String::new());
    b.say("| server | first body byte ms | whole page ms |".into());
    b.say("|---|---:|---:|".into());
    let client = stamp_tests::client();
    for (server, url) in [
        (
            "origin direct",
            format!("{}/__origin/trickle", b.origin.url),
        ),
        (
            "stamp-proxy `?dev=`",
            b.proxy.url(&format!("/__origin/trickle?dev={TICKET}")),
        ),
        (
            "nginx sub_filter",
            format!("{}/__origin/trickle", b.nginx.sub_filter),
        ),
    ] {
        let t = Instant::now();
        let mut resp = client
            .get(&url)
            .header("accept", "text/html")
            .send()
            .await?;
        ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        let first = resp.chunk().await?.context("empty page")?;
        let ttfb = t.elapsed();
        ensure!(!first.is_empty(), "an empty first chunk");
        while resp.chunk().await?.is_some() {}
        let total = t.elapsed();
        b.say(format!(
            "| {server} | {:.1} | {:.0} |",
            ttfb.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        ));
    }
    Ok(())
}

/// Peak RSS of a fresh proxy while one client downloads a 1 MiB and then a
/// big stamped page: flat means the page streams.
async fn memory(b: &mut Bench, targets: &mut Vec<Target>) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("stamp-load-mem")
        .tempdir()?;
    let store = dir.path().join("store");
    stamp_tests::seed_dir(
        &store,
        TICKET,
        &[("/src/main.js", "export const main = 'ticket';\n")],
    )
    .await?;
    let proxy = Proxy::start_with(
        Some(&b.origin.url),
        &[
            "--store",
            &store.to_string_lossy(),
            "--threads",
            &b.opts.workers.to_string(),
        ],
        &[("RUST_LOG", "warn")],
    )?;
    let client = stamp_tests::client();
    let pid = proxy.pid().context("proxy not running")?;
    let mut peaks = Vec::new();
    for mb in [1, b.opts.big_mib] {
        let url = proxy.url(&format!("/__origin/big?mb={mb}&dev={TICKET}"));
        let mut resp = client
            .get(&url)
            .header("accept", "text/html")
            .send()
            .await?;
        ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        let mut n = 0usize;
        let mut head = Vec::new();
        while let Some(c) = resp.chunk().await? {
            if head.len() < 4096 {
                head.extend_from_slice(&c[..c.len().min(4096)]);
            }
            n += c.len();
        }
        // The origin sends whole 64 KiB rows: a little under `mb` MiB.
        ensure!(n >= (mb << 20) / 100 * 99, "{url}: only {n} bytes");
        ensure!(
            String::from_utf8_lossy(&head).contains("?__ts="),
            "the big page was not stamped"
        );
        peaks.push((mb, peak_kib(pid)?));
    }
    b.say("Memory: peak RSS (VmHWM) of a fresh stamp-proxy while one client downloads a stamped page:".into());
    b.say(String::new());
    b.say("| page | peak RSS MiB |".into());
    b.say("|---:|---:|".into());
    for (mb, kib) in &peaks {
        b.say(format!("| {mb} MiB | {} |", mib(*kib)));
    }
    if let [(_, small), (big_mb, big)] = peaks[..] {
        let growth = big.saturating_sub(small);
        targets.push(Target {
            what: format!("memory flat in page size (1 → {big_mb} MiB stamped page)"),
            measured: format!("+{} MiB", mib(growth)),
            target: "flat (< +4 MiB)".into(),
            met: growth < 4 * 1024,
        });
    }
    Ok(())
}

fn peak_kib(pid: u32) -> anyhow::Result<u64> {
    stamp_tests::status_kib(pid, "VmHWM").context("no VmHWM for the proxy")
}

/// The rewriter against lol_html parsing the same bytes with no handlers, in
/// this process: the criterion bench measures the same with more care.
fn rewriter_ratio(b: &mut Bench) -> Vec<Target> {
    b.say(
        "Rewriter vs lol_html with no handlers (same bytes, 16 KiB chunks, best of 5 rounds):"
            .into(),
    );
    b.say(String::new());
    b.say("| page | lol_html no-op MB/s | lol_html, one no-op `script` handler MB/s | stamp rewriter MB/s | rewriter / no-op | rewriter / one handler |".into());
    b.say("|---|---:|---:|---:|---:|---:|".into());
    let spec = stamp_benches::spec(3);
    let mut targets = Vec::new();
    for (label, size) in [
        ("20 KB", 20 << 10),
        ("300 KB", 300 << 10),
        ("5 MB", 5 << 20),
    ] {
        let html = stamp_benches::page(size, 40);
        let budget = if b.opts.smoke { 2 << 20 } else { 64 << 20 };
        let reps = (budget / html.len()).max(1);
        let best = |f: &dyn Fn() -> usize| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        std::hint::black_box(f());
                    }
                    t.elapsed()
                })
                .min()
                .unwrap_or_default()
        };
        let noop = best(&|| stamp_benches::noop_parse(html.as_bytes()));
        let one = best(&|| stamp_benches::one_handler_parse(html.as_bytes()));
        let shared = bytes::Bytes::from(html.clone());
        let ours = best(&|| stamp_benches::rewrite(&shared, &spec));
        let mbps = |d: Duration| (html.len() * reps) as f64 / d.as_secs_f64().max(1e-9) / 1e6;
        let ratio = mbps(ours) / mbps(noop);
        let of_floor = mbps(ours) / mbps(one);
        b.say(format!(
            "| {label} | {:.0} | {:.0} | {:.0} | {ratio:.2} | {of_floor:.2} |",
            mbps(noop),
            mbps(one),
            mbps(ours)
        ));
        targets.push(Target {
            what: format!("rewriter vs lol_html no-op, {label}"),
            measured: format!(
                "{:.0}% (of one-handler floor: {:.0}%)",
                ratio * 100.0,
                of_floor * 100.0
            ),
            target: "≥ 80%".into(),
            met: ratio >= 0.8,
        });
    }
    targets
}

/// Two proxies over one Redis: a promote through A, timed until B serves it.
async fn fleet(b: &mut Bench) -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let origin = Origin::start()?;
    origin.route(
        "/",
        Route::html("<!doctype html><head><script type=module src=/src/main.js></script></head>"),
    );
    let args = ["--store", redis.url.as_str()];
    let a = Proxy::start_with(Some(&origin.url), &args, &[("RUST_LOG", "warn")])?;
    let bb = Proxy::start_with(Some(&origin.url), &args, &[("RUST_LOG", "warn")])?;
    let client = stamp_tests::client();
    let key = "FLEET-1";
    let mut upload_lat = Vec::new();
    let mut promote_lat = Vec::new();
    for i in 0..b.opts.fleet_rounds {
        let body = format!("export const v = {i};\n");
        let want = stamp_tests::module_url("/src/main.js", &body);
        let put = client
            .put(a.url(&format!(
                "/__stamp/api/v1/tickets/{key}/modules/src/main.js"
            )))
            .body(body)
            .send()
            .await?;
        ensure!(put.status().is_success(), "upload: {}", put.status());
        upload_lat.push(wait_for(&client, &bb.url(&format!("/?dev={key}")), &want).await?);
        let promote = client
            .post(a.url(&format!("/__stamp/api/v1/tickets/{key}/promote")))
            .header("content-type", "application/json")
            .body(r#"{"from": "dev"}"#)
            .send()
            .await?;
        ensure!(
            promote.status().is_success(),
            "promote: {}",
            promote.status()
        );
        promote_lat.push(wait_for(&client, &bb.url(&format!("/?qa={key}")), &want).await?);
        let revert = client
            .post(a.url(&format!("/__stamp/api/v1/tickets/{key}/revert")))
            .header("content-type", "application/json")
            .body(r#"{"from": "qa"}"#)
            .send()
            .await?;
        ensure!(revert.status().is_success(), "revert: {}", revert.status());
    }
    upload_lat.sort_unstable();
    promote_lat.sort_unstable();
    let pct = |v: &[Duration], p: f64| stamp_benches::percentile(v, p).as_secs_f64() * 1e3;
    b.say(format!(
        "Fleet: two stamp-proxy instances over one Redis, {} rounds; a change made through A, until B serves it:",
        b.opts.fleet_rounds
    ));
    b.say(String::new());
    b.say("| change | median ms | p99 ms |".into());
    b.say("|---|---:|---:|".into());
    b.say(format!(
        "| upload → visible in `?dev=` | {:.2} | {:.2} |",
        pct(&upload_lat, 0.5),
        pct(&upload_lat, 0.99)
    ));
    b.say(format!(
        "| promote dev → qa → visible in `?qa=` | {:.2} | {:.2} |",
        pct(&promote_lat, 0.5),
        pct(&promote_lat, 0.99)
    ));
    Ok(())
}

/// Polls `url` until its page contains `want`; returns how long that took.
pub(crate) async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    want: &str,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let html = client
            .get(url)
            .header("accept", "text/html")
            .send()
            .await?
            .text()
            .await?;
        if html.contains(want) {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("{url} never served {want}");
        }
    }
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kib: u64 = s
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(format!(", {} GiB RAM", (kib + (1 << 19)) >> 20))
        })
        .unwrap_or_default();
    let nginx = std::process::Command::new(
        stamp_benches::nginx::binary().unwrap_or_else(|_| PathBuf::from("nginx")),
    )
    .arg("-v")
    .output()
    .ok()
    .map(|o| {
        String::from_utf8_lossy(&o.stderr)
            .trim()
            .trim_start_matches("nginx version: ")
            .to_string()
    })
    .unwrap_or_default();
    format!("{} × {cpu}{mem}; {nginx}", default_workers())
}

const BEGIN: &str = "<!-- stamp-load:begin -->";
const END: &str = "<!-- stamp-load:end -->";

fn write_readme(path: &Path, started: &str, b: &Bench) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(i), Some(j)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} … {END} section to fill", path.display());
    };
    ensure!(i < j, "{}: {END} comes before {BEGIN}", path.display());
    let mut section = format!(
        "{BEGIN}\n_Generated by `benches/run` on {started}, {}. One run; the machine is shared, \
         so read the ratios (the servers compared take turns on the same cores, seconds apart), not the absolute figures._\n\n",
        machine()
    );
    for line in &b.lines {
        section.push_str(line);
        section.push('\n');
    }
    let new = format!("{}{section}{}", &text[..i], &text[j..]);
    std::fs::write(path, new)?;
    Ok(())
}
