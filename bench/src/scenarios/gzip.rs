//! `gzip`: the packet compression level, measured (issue #8: "gzip level
//! chosen by measurement").
//!
//! * **Figure**: a real push packet — 500 DailyReport changes (~500 bytes of
//!   JSON each, three lines), in the envelope the client sends, serialized
//!   as `hubsync_core::protocol::encode_envelope` does — compressed at each
//!   of gzip's levels 1 (what hubsync uses: `Compression::fast()`), 3, 6 and
//!   9, and decompressed: the median time per packet and the size.
//! * **Baseline**: level 6, gzip's own default.
//!
//! The note of each row adds what the bytes cost on a link: the packet's
//! time on the wire at 10 and 100 Mbit/s, to weigh against the CPU.
//!
//! Two packets: the suite's reports, which repeat the same references and
//! texts and so compress to a few per cent, and the same reports with free
//! text in them (notes and tasks of words drawn at random from a list),
//! closer to what people type.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{Body, Envelope, Header, PROTOCOL_VERSION, WireChange};
use uuid::Uuid;

use crate::data::{Refs, daily_report};
use crate::report::Row;
use crate::{Args, Outcome};

/// Changes per packet: the default `max_packet_entities`.
const PACKET: usize = 500;
const LEVELS: [u32; 4] = [1, 3, 6, 9];
const BASELINE_LEVEL: u32 = 6;
/// Words for the free text.
const WORDS: [&str; 32] = [
    "wall",
    "mortar",
    "delay",
    "crane",
    "rain",
    "delivered",
    "missing",
    "checked",
    "north",
    "south",
    "section",
    "floor",
    "pipes",
    "cable",
    "concrete",
    "poured",
    "waiting",
    "for",
    "inspector",
    "approved",
    "fixed",
    "leak",
    "scaffold",
    "moved",
    "two",
    "hours",
    "late",
    "truck",
    "pallets",
    "window",
    "frames",
    "order",
];

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let reps = if args.quick { 10 } else { 100 };
    let refs = Refs::new();
    let mut rows = Vec::new();
    let mut extra = serde_json::Map::new();
    for (variant, varied) in [("suite reports", false), ("reports with free text", true)] {
        let envelope = packet(&refs, varied);
        let (found, json_len, serialize) = levels(&envelope, reps, variant)?;
        rows.extend(found);
        extra.insert(
            variant.into(),
            serde_json::json!({"json_bytes": json_len, "serialize_us": us(serialize)}),
        );
    }
    extra.insert("packet_entities".into(), PACKET.into());
    extra.insert("runs_per_level".into(), reps.into());
    Ok(Outcome::Rows {
        rows,
        extra: serde_json::Value::Object(extra),
    })
}

/// A push packet of [`PACKET`] reports; `varied`: with free text.
fn packet(refs: &Refs, varied: bool) -> Envelope {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut words = |n: usize| {
        let mut text = Vec::with_capacity(n);
        for _ in 0..n {
            // xorshift64: deterministic, no dependency.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            text.push(WORDS[(rng % WORDS.len() as u64) as usize]);
        }
        text.join(" ")
    };
    Envelope {
        header: Header {
            protocol: PROTOCOL_VERSION,
            sender_node_id: Uuid::now_v7(),
            recipient_node_id: Uuid::now_v7(),
            packet_no: 1,
            ack_packet_no: 0,
            schema_version: "1.0.0".into(),
            timestamp: now_utc(),
        },
        body: Body {
            entities: (0..PACKET)
                .map(|i| WireChange {
                    entity_type: "DailyReport".into(),
                    uuid: Uuid::now_v7(),
                    operation: Operation::Insert,
                    data: {
                        let mut data = daily_report(i, refs);
                        if varied {
                            data["notes"] = words(30).into();
                            if let Some(lines) = data["lines"].as_array_mut() {
                                for line in lines {
                                    line["task"] = words(6).into();
                                }
                            }
                        }
                        data
                    },
                    updated_at: now_utc(),
                    is_deleted: false,
                    base_rev: None,
                    rev: None,
                    origin_node_id: None,
                })
                .collect(),
            results: Vec::new(),
            more: false,
            remaining: None,
            evict: Vec::new(),
            results_kept: 0,
            holding: None,
            sends_ahead: false,
        },
    }
}

/// The rows for every level on `envelope`, the JSON's size and the time
/// to serialize it.
fn levels(
    envelope: &Envelope,
    reps: usize,
    variant: &str,
) -> anyhow::Result<(Vec<Row>, usize, Duration)> {
    let serialize = median(reps, || {
        serde_json::to_vec(envelope).map(drop).map_err(Into::into)
    })?;
    let json = serde_json::to_vec(envelope)?;
    eprintln!(
        "gzip: a packet of {PACKET} {variant}, {} bytes of JSON (serialized in {:.0} µs), {reps} runs per level",
        json.len(),
        us(serialize)
    );

    struct Measured {
        level: u32,
        compress: Duration,
        decompress: Duration,
        size: usize,
    }
    let mut measured = Vec::new();
    for level in LEVELS {
        let packed = compress(&json, level)?;
        let compress_t = median(reps, || compress(&json, level).map(drop))?;
        let decompress_t = median(reps, || {
            let mut out = Vec::with_capacity(json.len());
            GzDecoder::new(packed.as_slice()).read_to_end(&mut out)?;
            anyhow::ensure!(out == json, "level {level}: the round trip differs");
            Ok(())
        })?;
        eprintln!(
            "gzip: level {level}: {} bytes, compress {:.0} µs, decompress {:.0} µs",
            packed.len(),
            us(compress_t),
            us(decompress_t)
        );
        measured.push(Measured {
            level,
            compress: compress_t,
            decompress: decompress_t,
            size: packed.len(),
        });
    }
    let base = measured
        .iter()
        .find(|m| m.level == BASELINE_LEVEL)
        .ok_or_else(|| anyhow::anyhow!("level {BASELINE_LEVEL} was not measured"))?;
    let (base_t, base_size) = (us(base.compress), base.size);
    // The time `bytes` take on a link of `mbit` Mbit/s, in ms.
    let wire_ms = |bytes: usize, mbit: f64| bytes as f64 * 8.0 / (mbit * 1e6) * 1e3;
    let size = format!("{variant}, {} KB", json.len() / 1024);
    let mut rows = Vec::new();
    for m in &measured {
        let what = if m.level == 1 { " (hubsync)" } else { "" };
        rows.push(
            Row::cost(
                &format!("gzip level {}{what}: compress", m.level),
                size.clone(),
                "µs",
                us(m.compress),
                &format!("level {BASELINE_LEVEL}"),
                base_t,
            )
            .note(format!(
                "{} bytes ({:.1} % of the JSON; level {BASELINE_LEVEL}: {base_size}); decompress {:.0} µs; on the wire {:.1} ms at 10 Mbit/s, {:.2} ms at 100 (uncompressed {:.1} / {:.2}); median of {reps}",
                m.size,
                m.size as f64 * 100.0 / json.len() as f64,
                us(m.decompress),
                wire_ms(m.size, 10.0),
                wire_ms(m.size, 100.0),
                wire_ms(json.len(), 10.0),
                wire_ms(json.len(), 100.0),
            )),
        );
        rows.push(Row::cost(
            &format!("gzip level {}{what}: size", m.level),
            size.clone(),
            "KB",
            m.size as f64 / 1024.0,
            &format!("level {BASELINE_LEVEL}"),
            base_size as f64 / 1024.0,
        ));
    }
    Ok((rows, json.len(), serialize))
}

fn compress(bytes: &[u8], level: u32) -> anyhow::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::new(level),
    );
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// The median time of `reps` calls of `f` (after one call to warm up).
fn median(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
