//! Criterion benchmarks: the page rewriter against lol_html parsing the same
//! bytes with no handlers (the floor this design cannot beat), the import-map
//! merge, and request classification.
//!
//!     cargo bench -p stamp-benches --bench rewrite

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stamp_benches::{noop_parse, one_handler_parse, overrides, page, rewrite, spec};

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
        g.bench_with_input(BenchmarkId::new("stamp-rewrite", name), &html, |b, h| {
            b.iter(|| rewrite(h.as_bytes(), &s))
        });
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

criterion_group!(benches, pages, merge, classify);
criterion_main!(benches);
