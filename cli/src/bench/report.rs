//! The bench's medians: a text table (also the markdown report's body) and an SVG chart
//! (`plotters`' SVG backend, which needs no font library).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cold,
    ColdProfile,
    Warm,
    Full,
    /// N cold starts at once on one daemon.
    Concurrent(u32),
}

impl Mode {
    pub fn label(self) -> String {
        match self {
            Mode::Cold => "cold".into(),
            Mode::ColdProfile => "cold+profile".into(),
            Mode::Warm => "warm".into(),
            Mode::Full => "full pull".into(),
            Mode::Concurrent(n) => format!("cold x{n}"),
        }
    }
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub pull: Duration,
    /// From the start of the pull to the container's first byte of output (`None`: it
    /// printed nothing).
    pub first_output: Option<Duration>,
    /// From the start of the pull to the container's exit.
    pub exit: Duration,
    /// Bytes received from the registry.
    pub bytes: u64,
    /// Registry requests sent.
    pub requests: u64,
    /// Of `bytes`, those not fetched as chunks of a lazy layer: manifests, configs, TOCs
    /// (whole layers for a full pull). Chunks the pull prefetches (the default program,
    /// `etc/passwd`) are not counted here, whenever they arrive.
    pub metadata_bytes: u64,
    /// Compressed bytes of the distinct chunks the container's reads needed (the daemon's
    /// `ReadChunkBytes`), the yardstick for `bytes`.
    pub read_bytes: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians of one mode: (pull s, first output s, exit s, MB, requests).
fn medians(samples: &[Sample]) -> (f64, f64, f64, f64, f64) {
    let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    (
        m(&|s| s.pull.as_secs_f64()),
        m(&|s| s.first_output.map_or(f64::NAN, |d| d.as_secs_f64())),
        m(&|s| s.exit.as_secs_f64()),
        m(&|s| s.bytes as f64 / 1e6),
        m(&|s| s.requests as f64),
    )
}

/// Medians of the byte split: (MB of metadata, MB of chunks the reads needed).
fn byte_medians(samples: &[Sample]) -> (f64, f64) {
    let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    (
        m(&|s| s.metadata_bytes as f64 / 1e6),
        m(&|s| s.read_bytes as f64 / 1e6),
    )
}

/// A markdown table of the medians (readable as plain text too).
pub fn table(results: &[(Mode, Vec<Sample>)]) -> String {
    let mut t = String::from(
        "| mode | pull (s) | first output (s) | exit (s) | fetched (MB) | metadata (MB) | chunks read (MB) | requests |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (mode, samples) in results {
        let (p, f, e, mb, r) = medians(samples);
        let (pull_mb, read_mb) = byte_medians(samples);
        t.push_str(&format!(
            "| {} | {p:.3} | {} | {e:.3} | {mb:.2} | {pull_mb:.2} | {read_mb:.2} | {r:.0} |\n",
            mode.label(),
            if f.is_nan() {
                "-".to_string()
            } else {
                format!("{f:.3}")
            }
        ));
    }
    t
}

/// Every sample and the medians as JSON (for harnesses that compare runs, e.g. the
/// shaped-link bench): `{"image", "command", "modes": [{"mode", "median": {...},
/// "samples": [{"pull_s", "first_output_s", "exit_s", "bytes", "requests", "metadata_bytes",
/// "read_bytes"}]}]}`; times in seconds, bytes in bytes.
pub fn write_json(
    path: &Path,
    image: &str,
    cmd: &str,
    results: &[(Mode, Vec<Sample>)],
) -> Result<()> {
    let sample = |s: &Sample| {
        serde_json::json!({
            "pull_s": s.pull.as_secs_f64(),
            "first_output_s": s.first_output.map(|d| d.as_secs_f64()),
            "exit_s": s.exit.as_secs_f64(),
            "bytes": s.bytes,
            "requests": s.requests,
            "metadata_bytes": s.metadata_bytes,
            "read_bytes": s.read_bytes,
        })
    };
    let modes: Vec<serde_json::Value> = results
        .iter()
        .map(|(mode, samples)| {
            let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
            serde_json::json!({
                "mode": mode.label(),
                "median": {
                    "pull_s": m(&|s| s.pull.as_secs_f64()),
                    "first_output_s": m(&|s| s.first_output.map_or(f64::NAN, |d| d.as_secs_f64())),
                    "exit_s": m(&|s| s.exit.as_secs_f64()),
                    "bytes": m(&|s| s.bytes as f64),
                    "requests": m(&|s| s.requests as f64),
                    "metadata_bytes": m(&|s| s.metadata_bytes as f64),
                    "read_bytes": m(&|s| s.read_bytes as f64),
                },
                "samples": samples.iter().map(sample).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = serde_json::json!({ "image": image, "command": cmd, "modes": modes });
    let text = serde_json::to_vec_pretty(&doc).expect("json");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn write_markdown(path: &Path, image: &str, cmd: &str, rounds: u32, table: &str) -> Result<()> {
    let text = format!(
        "# skiff bench\n\nImage `{image}`, command `{cmd}`, {rounds} round(s) per mode, medians. \
         Times run from the start of `pull` (none for warm runs) to the container's first \
         output and to its exit; bytes and requests are what the daemon received from and \
         sent to the registry.\n\n{table}\n![chart](bench.svg)\n"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Grouped bars: per mode, the median time to first output and to exit.
pub fn write_chart(path: &Path, image: &str, results: &[(Mode, Vec<Sample>)]) -> Result<()> {
    let rows: Vec<(String, f64, f64)> = results
        .iter()
        .map(|(m, s)| {
            let (_, f, e, _, _) = medians(s);
            (m.label(), if f.is_nan() { 0.0 } else { f }, e)
        })
        .collect();
    let top = rows.iter().map(|r| r.2).fold(0.0f64, f64::max).max(0.001) * 1.15;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("skiff bench: {image}"), ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..rows.len() as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(rows.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < rows.len() {
                    rows[i].0.clone()
                } else {
                    String::new()
                }
            })
            .y_desc("seconds (median)")
            .draw()?;
        let first = RGBColor(70, 130, 180);
        let exit = RGBColor(230, 140, 50);
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let x = i as f64;
                Rectangle::new([(x + 0.15, 0.0), (x + 0.48, r.1)], first.filled())
            }))?
            .label("first output")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], first.filled()));
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let x = i as f64;
                Rectangle::new([(x + 0.52, 0.0), (x + 0.85, r.2)], exit.filled())
            }))?
            .label("exit")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], exit.filled()));
        // Each bar's value above it, centred: the lazy modes' bars are short next to a full
        // pull's, the numbers carry them.
        let label = |x: f64, v: f64| {
            let style = ("sans-serif", 13)
                .into_text_style(&root)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(format!("{v:.3}"), (x, v + top * 0.01), style)
        };
        chart.draw_series(
            rows.iter()
                .enumerate()
                .filter(|(_, r)| r.1 > 0.0)
                .map(|(i, r)| label(i as f64 + 0.315, r.1)),
        )?;
        chart.draw_series(
            rows.iter()
                .enumerate()
                .map(|(i, r)| label(i as f64 + 0.685, r.2)),
        )?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(first: f64, exit: f64) -> Sample {
        Sample {
            pull: Duration::from_millis(100),
            first_output: Some(Duration::from_secs_f64(first)),
            exit: Duration::from_secs_f64(exit),
            bytes: 2_000_000,
            requests: 10,
            metadata_bytes: 500_000,
            read_bytes: 1_000_000,
        }
    }

    #[test]
    fn medians_table_and_chart() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let results = vec![
            (Mode::Cold, vec![s(0.5, 0.6), s(0.7, 0.8), s(0.9, 1.0)]),
            (Mode::Warm, vec![s(0.02, 0.03)]),
        ];
        let t = table(&results);
        assert!(
            t.contains("| cold | 0.100 | 0.700 | 0.800 | 2.00 | 0.50 | 1.00 | 10 |"),
            "{t}"
        );
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("c.svg");
        write_chart(&svg, "img", &results).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("cold") && text.contains("0.80"));
    }
}
