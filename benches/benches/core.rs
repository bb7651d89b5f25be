//! Micro-benchmarks of the per-delivery work that has no I/O: signing a body,
//! rendering it, and deciding the next retry.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use webhookd_core::{Event, RetrySchedule, signer};

fn event_with_data_of(bytes: usize) -> Event {
    let message = format!(
        r#"{{"event":"generated_video_success","username":"bench","event_id":"evt_bench","timestamp":1732806631,"data":{{"pad":"{}"}}}}"#,
        "x".repeat(bytes)
    );
    Event::parse(message.as_bytes(), 0).expect("benchmark event is valid")
}

fn signing(c: &mut Criterion) {
    let secret = webhookd_core::ids::new_secret();
    let mut group = c.benchmark_group("sign");
    for size in [1024, 64 * 1024] {
        let body = vec![b'a'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{}KiB", size / 1024), |b| {
            b.iter(|| signer::sign(black_box(&secret), black_box(&body)));
        });
    }
    group.finish();
}

fn rendering(c: &mut Criterion) {
    let event = event_with_data_of(1024);
    c.bench_function("render_body/1KiB", |b| b.iter(|| black_box(&event).body()));
    let message = br#"{"event":"generated_video_success","username":"bench","data":{"video_id":"v1","duration":30}}"#;
    c.bench_function("parse_event/small", |b| {
        b.iter(|| Event::parse(black_box(message), 0));
    });
}

fn scheduling(c: &mut Criterion) {
    let schedule = RetrySchedule::default();
    c.bench_function("retry_schedule/next_attempt", |b| {
        b.iter(|| schedule.next_attempt(black_box(4), black_box(0.37), black_box(None)));
    });
}

criterion_group!(benches, signing, rendering, scheduling);
criterion_main!(benches);
