//! Draws the congestion-control experiments of `proto/tests/sim/fairness.rs`
//! as SVG plots over time, classic LEDBAT and LEDBAT++ side by side: each
//! flow's throughput, the bottleneck's queuing delay and the windows.
//!
//! ```sh
//! cargo run --release -p utp-proto --example congestion_plots [OUT_DIR]
//! ```
//!
//! writes `latecomer.svg` and `newreno.svg` into `OUT_DIR` (default
//! `docs/congestion`, the plots the README shows).

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, unreachable_pub)]
mod common;

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use plotters::prelude::*;
use utp_proto::congestion::{ControllerFactory, LedbatConfig, LedbatPlusPlusConfig};

use common::flows::{against_newreno, latecomer, run, Experiment, Series};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn controllers() -> [(&'static str, Arc<dyn ControllerFactory>); 2] {
    [
        ("LEDBAT (RFC 6817, libutp; default)", Arc::new(LedbatConfig::default())),
        ("LEDBAT++", Arc::new(LedbatPlusPlusConfig::default())),
    ]
}

const FLOW_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const TCP_COLOR: RGBColor = RGBColor(214, 39, 40);

/// One column: throughput, queuing delay and windows of one run.
fn column(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    s: &Series,
    secs: f64,
) -> Result<()> {
    let rows = area.split_evenly((3, 1));
    let t = |k: usize| (k as f64 + 0.5) * s.slot.as_secs_f64();
    let slot = s.slot.as_secs_f64();

    // Throughput, Mbit/s.
    let mbit = |bytes: u64| bytes as f64 * 8.0 / slot / 1e6;
    let mut chart = ChartBuilder::on(&rows[0])
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .margin_right(24)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(0.0..secs, 0.0..11.0)?;
    chart.configure_mesh().y_desc("Mbit/s").x_desc("s").light_line_style(WHITE).draw()?;
    for (i, flow) in s.flows.iter().enumerate() {
        let color = FLOW_COLORS[i % FLOW_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                flow.iter().enumerate().map(|(k, &b)| (t(k), mbit(b))),
                color.stroke_width(2),
            ))?
            .label(format!("uTP flow {}", i + 1))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    if s.tcp.iter().any(|&b| b > 0) {
        chart
            .draw_series(LineSeries::new(
                s.tcp.iter().enumerate().map(|(k, &b)| (t(k), mbit(b))),
                TCP_COLOR.stroke_width(2),
            ))?
            .label("NewReno")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], TCP_COLOR.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

    // Queuing delay at the bottleneck, ms.
    let mut chart = ChartBuilder::on(&rows[1])
        .margin(8)
        .margin_right(24)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(0.0..secs, 0.0..130.0)?;
    chart.configure_mesh().y_desc("queuing delay, ms").x_desc("s").draw()?;
    chart.draw_series(LineSeries::new(
        s.queue_ms.iter().enumerate().map(|(k, &q)| (t(k), q)),
        BLACK.stroke_width(2),
    ))?;

    // Windows, KB.
    let max = s.cwnd.iter().flatten().copied().max().unwrap_or(1) as f64 / 1000.0;
    let mut chart = ChartBuilder::on(&rows[2])
        .margin(8)
        .margin_right(24)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(0.0..secs, 0.0..max * 1.1)?;
    chart.configure_mesh().y_desc("window, KB").x_desc("s").draw()?;
    for (i, w) in s.cwnd.iter().enumerate() {
        let color = FLOW_COLORS[i % FLOW_COLORS.len()];
        chart.draw_series(LineSeries::new(
            w.iter().enumerate().map(|(k, &c)| (t(k), c as f64 / 1000.0)),
            color.stroke_width(2),
        ))?;
    }
    Ok(())
}

/// Runs `make` with both controllers and draws them side by side.
fn plot(
    path: PathBuf,
    what: &str,
    make: impl Fn(Arc<dyn ControllerFactory>) -> Experiment,
) -> Result<()> {
    let root = SVGBackend::new(&path, (1400, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(36);
    header.titled(what, ("sans-serif", 22))?;
    let cols = body.split_evenly((1, 2));
    for ((name, controller), area) in controllers().into_iter().zip(cols.iter()) {
        let e = make(controller);
        let secs = e.duration.as_secs_f64();
        let series = run(&e);
        column(area, name, &series, secs)?;
        eprintln!("{what}: {name} done");
    }
    root.present()?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "docs/congestion".into()));
    std::fs::create_dir_all(&out)?;
    plot(
        out.join("latecomer.svg"),
        "Latecomer: a second flow joins after 20 s (10 Mbit/s bottleneck, 20 ms base RTT)",
        latecomer,
    )?;
    plot(
        out.join("newreno.svg"),
        "Five uTP flows and a NewReno flow from 10 s (10 Mbit/s bottleneck, 20 ms base RTT)",
        |c| against_newreno(c, 5),
    )?;
    Ok(())
}
