//! Criterion benchmarks: the page rewriter against lol_html parsing the same
//! bytes with no handlers (the floor this design cannot beat), the import-map
//! merge, and request classification.
//!
//!     cargo bench -p stamp-benches --bench rewrite

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

criterion::criterion_group!(benches, pages, merge, classify, reports);
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use stamp_benches::{
    noop_parse, one_handler_parse, overrides, page, page_late_script, page_listing, page_real_body,
    page_svg_icons, page_svg_icons_late_script, rewrite, rewrite_full, spec,
};

fn pages(c: &mut Criterion) {
    let mut g = c.benchmark_group("page");
    g.sample_size(20);
    for (name, size) in [("20KB", 20 << 10), ("300KB", 300 << 10), ("5MB", 5 << 20)] {
        let html = page(size, 40);
        let s = spec(3);
        g.throughput(Throughput::Bytes(html.len() as u64));
        g.bench_with_input(BenchmarkId::new("lol_html-noop", name), &html, |b, h| {
            b.iter(|| noop_parse(h.as_bytes()))
        });
        g.bench_with_input(
            BenchmarkId::new("lol_html-one-handler", name),
            &html,
            |b, h| b.iter(|| one_handler_parse(h.as_bytes())),
        );
        let shared = bytes::Bytes::from(html.clone());
        g.bench_with_input(BenchmarkId::new("stamp-rewrite", name), &shared, |b, h| {
            b.iter(|| rewrite(h, &s))
        });
        let late = bytes::Bytes::from(page_late_script(size, 40));
        g.bench_with_input(
            BenchmarkId::new("stamp-rewrite-late-script", name),
            &late,
            |b, h| b.iter(|| rewrite(h, &s)),
        );
        let icons = bytes::Bytes::from(page_svg_icons(size, 40));
        g.bench_with_input(
            BenchmarkId::new("stamp-rewrite-svg-icons", name),
            &icons,
            |b, h| b.iter(|| rewrite(h, &s)),
        );
        let icons_late = bytes::Bytes::from(page_svg_icons_late_script(size, 40));
        g.bench_with_input(
            BenchmarkId::new("stamp-rewrite-svg-icons-late-script", name),
            &icons_late,
            |b, h| b.iter(|| rewrite(h, &s)),
        );
        let real = bytes::Bytes::from(page_real_body(size, 40));
        g.bench_with_input(
            BenchmarkId::new("stamp-rewrite-real-body", name),
            &real,
            |b, h| b.iter(|| rewrite(h, &s)),
        );
        let listing = bytes::Bytes::from(page_listing(size, 40));
        g.bench_with_input(
            BenchmarkId::new("stamp-rewrite-listing", name),
            &listing,
            |b, h| b.iter(|| rewrite(h, &s)),
        );
        g.bench_with_input(
            BenchmarkId::new("stamp-rewrite-no-early-exit", name),
            &shared,
            |b, h| b.iter(|| rewrite_full(h, &s)),
        );
    }
    g.finish();
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("importmap-merge");
    let page_url = url::Url::parse("https://shop.example/").unwrap_or_else(|_| unreachable!());
    for n in [10usize, 1000] {
        let html = page(0, n);
        let start = html.find("{\"imports\"").unwrap_or(0);
        let end = html.find("</script>").unwrap_or(html.len());
        let map = html[start..end].to_string();
        let eff = overrides(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &map, |b, m| {
            b.iter(|| stamp_data::testing::merge(m, &eff.overrides, &page_url, 1 << 24))
        });
    }
    g.finish();
}

fn classify(c: &mut Criterion) {
    let cookies: [&[u8]; 1] =
        [b"_ga=GA1.2.3; session=abc123; ticket_stamp=dev.TKT-101; theme=dark"];
    c.bench_function("classify/query", |b| {
        b.iter(|| {
            stamp_data::testing::classify(Some("page=2&dev=tkt-101&sort=price"), [], "ticket_stamp")
        })
    });
    c.bench_function("classify/cookie", |b| {
        b.iter(|| stamp_data::testing::classify(Some("page=2"), cookies, "ticket_stamp"))
    });
}

/// What a page report costs the proxy before it is queued: reading and
/// checking the JSON, and the record kept (a typical report: a ticket page
/// with two modules that ran and one error); and a rollout's side of a
/// visitor (one SHA-256 per ticket rolling out).
fn reports(c: &mut Criterion) {
    let body = serde_json::json!({
        "v": 1, "ticket": "TKT-1", "view": "dev", "side": "ticket", "page": "/checkout",
        "variant": "a".repeat(64), "update": false,
        "modules": {"expected": 2, "ran": ["b".repeat(64), "c".repeat(64)], "workers": [], "production": [], "not_run": []},
        "errors": [{"kind": "error", "message": "TypeError: x is undefined", "source": "/src/cart.js", "line": 12,
                    "stack": "at render (http://shop.test/src/cart.js:12:5)"}],
        "error_count": 1, "failed_loads": 0,
    })
    .to_string();
    let key = stamp_model::TicketKey::parse("TKT-1").unwrap();
    c.bench_function("report/parse-and-record", |b| {
        b.iter(|| {
            let r = stamp_model::views::Report::parse(black_box(body.as_bytes())).unwrap();
            black_box(r.record(key.clone(), stamp_model::Stage::Dev, 1))
        })
    });
    let visitor = stamp_model::rollout::visitor_id_from(42);
    c.bench_function("rollout/side-of-a-visitor", |b| {
        b.iter(|| {
            black_box(stamp_model::rollout::in_slice(
                &key,
                black_box(&visitor),
                50,
            ))
        })
    });
}

criterion_main!(benches);
