//! Congestion control beyond one flow: classic LEDBAT (RFC 6817, libutp's
//! behaviour) next to LEDBAT++ in the experiments that tell them apart.
//! Each test prints a table for both controllers and asserts the property
//! (for LEDBAT++ where it is LEDBAT++'s promise).
//! `cargo run --release -p utp-proto --example congestion_plots` draws the
//! latecomer and NewReno experiments.

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::{ControllerFactory, LedbatConfig, LedbatPlusPlusConfig};

use crate::common::flows::{against_newreno, bottleneck, latecomer, run, Experiment, FlowSpec};

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// The two controllers, by name.
fn controllers() -> [(&'static str, Arc<dyn ControllerFactory>); 2] {
    [
        ("LEDBAT", Arc::new(LedbatConfig::default())),
        ("LEDBAT++", Arc::new(LedbatPlusPlusConfig::default())),
    ]
}

#[test]
fn latecomer_gets_its_fair_share() {
    println!("latecomer: flow 2 starts 20 s after flow 1, 10 Mbit/s, shares of the uTP total");
    println!("  controller   at 25-30 s        at 40-50 s        queue 40-50 s");
    let mut ok = Vec::new();
    for (name, c) in controllers() {
        let r = run(&latecomer(c));
        let rel = |from: f64, to: f64| {
            let (a, b) = (r.share(0, s(from), s(to)), r.share(1, s(from), s(to)));
            (a / (a + b), b / (a + b))
        };
        let early = rel(25.0, 30.0);
        let late = rel(40.0, 50.0);
        println!(
            "  {name:<10}   {:>4.0} % / {:>3.0} %     {:>4.0} % / {:>3.0} %     {:?}",
            early.0 * 100.0,
            early.1 * 100.0,
            late.0 * 100.0,
            late.1 * 100.0,
            r.mean_queue(s(40.0), s(50.0))
        );
        ok.push((name, (0.4..=0.6).contains(&late.0)));
    }
    assert!(ok[1].1, "LEDBAT++: shares not within 20 % of fair 30 s after the latecomer");
}

#[test]
fn flows_with_different_base_delays_share_fairly() {
    println!("five flows, one-way base delays 10, 32.5, 55, 77.5, 100 ms, 10 Mbit/s, 30-60 s:");
    println!("  controller   shares (%)                        Jain's index   utilisation");
    let mut jain = Vec::new();
    for (name, c) in controllers() {
        let mut e = Experiment::new(c, 5, 60);
        for (i, f) in e.flows.iter_mut().enumerate() {
            *f = FlowSpec { start: Duration::ZERO, extra_delay: s(0.0225 * i as f64) };
        }
        let r = run(&e);
        let (from, to) = (s(30.0), s(60.0));
        let shares: Vec<String> =
            (0..5).map(|i| format!("{:>5.1}", r.share(i, from, to) * 100.0)).collect();
        let j = r.jain(from, to);
        println!(
            "  {name:<10}   {}   {j:>12.3}   {:>8.1} %",
            shares.join(" "),
            r.utp_share(from, to) * 100.0
        );
        jain.push(j);
    }
    assert!(jain[1] >= jain[0] - 0.02, "LEDBAT++ less fair than LEDBAT: {jain:?}");
}

#[test]
fn newreno_keeps_the_link_against_many_flows() {
    println!("one NewReno flow from 10 s against N uTP flows, 10 Mbit/s, shares at 20-40 s:");
    println!("  controller   N    TCP      uTP      queue");
    let mut tcp = Vec::new();
    for (name, c) in controllers() {
        for n in [1, 5, 50] {
            let r = run(&against_newreno(c.clone(), n));
            let (from, to) = (s(20.0), s(40.0));
            let t = r.tcp_share(from, to);
            println!(
                "  {name:<10} {n:>3} {:>6.1} % {:>6.1} %   {:?}",
                t * 100.0,
                r.utp_share(from, to) * 100.0,
                r.mean_queue(from, to)
            );
            tcp.push((name, n, t));
        }
    }
    // What 50 flows hold in flight at their smallest windows, against what
    // the path holds: 20 ms at 10 Mbit/s on the wire plus a full queue.
    let path = 25_000 + 100 * 1402;
    let ours = [
        ("LEDBAT", LedbatConfig::default().min_packets),
        ("LEDBAT++", LedbatPlusPlusConfig::default().min_packets),
    ];
    for (name, packets) in ours {
        let floor = 50 * packets * 1402;
        println!(
            "  {name}: 50 flows at their minimum window ({packets} packets) keep {} KB in flight; the path and its queue hold {} KB",
            floor / 1000,
            path / 1000
        );
    }
    for &(name, n, t) in &tcp {
        if name == "LEDBAT++" && n <= 5 {
            assert!(t >= 0.75, "{name} x {n}: TCP kept only {t}");
        }
    }
}

#[test]
fn drift_and_route_changes() {
    println!("one flow, 10 Mbit/s: utilisation and mean queuing delay, 10-40 s");
    println!("  controller   B's clock +1 %      B's clock -1 %      route +30 ms at 20 s");
    for (name, c) in controllers() {
        let mut cells = Vec::new();
        for case in 0..3 {
            let mut e = Experiment::new(c.clone(), 1, 40);
            match case {
                0 => e.b_clock_rate = 1.01,
                1 => e.b_clock_rate = 1.0 / 1.01,
                _ => {
                    e.route_change =
                        Some((s(20.0), bottleneck().with_latency(Duration::from_millis(40))))
                }
            }
            let r = run(&e);
            let (from, to) = if case == 2 { (s(22.0), s(40.0)) } else { (s(10.0), s(40.0)) };
            let u = r.utp_share(from, to);
            let q = r.mean_queue(from, to);
            cells.push(format!("{:>5.1} % {:>7.1?}", u * 100.0, q));
            assert!(u >= 0.85, "{name} case {case}: utilisation {u}");
        }
        println!("  {name:<10}   {}", cells.join("    "));
    }
}

#[test]
fn utilisation_alone_and_the_cost_of_slowdowns() {
    println!("one flow alone on the 10 Mbit/s link, 10-60 s: utilisation, mean queuing delay");
    println!("  controller                 empty link             1 % random loss");
    let no_slowdowns = LedbatPlusPlusConfig { slowdowns: false, ..Default::default() };
    let cases: [(&str, Arc<dyn ControllerFactory>); 3] = [
        ("LEDBAT", Arc::new(LedbatConfig::default())),
        ("LEDBAT++", Arc::new(LedbatPlusPlusConfig::default())),
        ("LEDBAT++ no slowdowns", Arc::new(no_slowdowns)),
    ];
    let mut u = Vec::new();
    for (name, c) in cases {
        let (from, to) = (s(10.0), s(60.0));
        let mut cells = Vec::new();
        let mut util = Vec::new();
        for loss in [0.0, 0.01] {
            let mut e = Experiment::new(c.clone(), 1, 60);
            e.forward = bottleneck().with_loss(loss);
            let r = run(&e);
            util.push(r.utp_share(from, to));
            cells.push(format!(
                "{:>5.1} % {:>7.1?}",
                util[util.len() - 1] * 100.0,
                r.mean_queue(from, to)
            ));
        }
        println!("  {name:<24} {}", cells.join("      "));
        u.push(util);
    }
    println!("  cost of the slowdowns: {:.1} points of utilisation", (u[2][0] - u[1][0]) * 100.0);
    assert!(u[1][0] >= 0.85, "LEDBAT++ alone: {}", u[1][0]);
    assert!(u[2][0] - u[1][0] <= 0.12, "slowdowns cost {}", u[2][0] - u[1][0]);
    assert!(u[0][1] >= 0.5, "LEDBAT under 1 % loss: {}", u[0][1]);
}
