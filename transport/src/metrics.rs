//! Prometheus metrics of a [`UtpSocket`] (feature `metrics`), registered
//! with a `prometheus-client` [`Registry`] the way `libp2p-metrics` does.
//!
//! ```
//! # async fn demo() -> std::io::Result<()> {
//! use prometheus_client::registry::Registry;
//!
//! let socket = libp2p_utp::UtpSocket::bind("127.0.0.1:0").await?;
//! let mut registry = Registry::default();
//! libp2p_utp::metrics::register(&socket, registry.sub_registry_with_prefix("utp"));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("utp_bytes_sent_total"));
//! # Ok(()) }
//! ```
//!
//! Every scrape reads [`UtpSocket::socket_stats`]; the collector does not
//! keep the socket open (a closed socket's metrics disappear).

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::shared::Shared;
use crate::socket::socket_stats_of;
use crate::UtpSocket;

/// Registers the counters and gauges of `socket` with `registry`:
/// `packets_sent`, `packets_received`, `bytes_sent`, `bytes_received`,
/// `retransmits`, `timeouts` (every connection, closed ones included),
/// `connections{state}` (handshaking, open, draining), `datagrams_dropped{reason}`,
/// `syns{outcome}` (refused for lack of room, refused or ignored by the
/// application), `resets_sent` and `resets_rate_limited`.
pub fn register(socket: &UtpSocket, registry: &mut Registry) {
    registry.register_collector(Box::new(SocketCollector { shared: socket.downgrade() }));
}

#[derive(Debug)]
struct SocketCollector {
    shared: Weak<Shared>,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn counters_by(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for &(value, n) in values {
        ConstCounter::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for SocketCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.shared.upgrade() else { return Ok(()) };
        let s = socket_stats_of(&shared);
        let t = &s.traffic;
        let e = &s.endpoint;
        counter(&mut encoder, "packets_sent", "uTP packets sent by connections", t.packets_sent)?;
        counter(
            &mut encoder,
            "packets_received",
            "uTP packets received by connections",
            t.packets_received,
        )?;
        counter(
            &mut encoder,
            "bytes_sent",
            "Payload bytes sent, retransmissions included",
            t.bytes_sent,
        )?;
        counter(&mut encoder, "bytes_received", "Payload bytes received", t.bytes_received)?;
        counter(&mut encoder, "retransmits", "Packets sent again", t.retransmits)?;
        counter(&mut encoder, "timeouts", "Retransmission timeouts", t.timeouts)?;
        let c = &s.connections;
        let mut family = encoder.encode_descriptor(
            "connections",
            "Connections held, by state",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (state, n) in
            [("handshaking", c.handshaking), ("open", c.open), ("draining", c.draining)]
        {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            ConstGauge::new(n).encode(family.encode_family(&[("state", state)])?)?;
        }
        counters_by(
            &mut encoder,
            "datagrams_dropped",
            "Datagrams dropped, by reason",
            "reason",
            &[
                ("malformed", e.dropped_malformed),
                ("unknown_connection", e.dropped_unknown_connection),
                ("bad_ack", e.dropped_bad_ack),
                ("stale_syn", e.dropped_stale_syn),
                ("not_utp", s.non_utp_dropped),
                ("receive_buffer_full", s.kernel_receive_drops),
            ],
        )?;
        counters_by(
            &mut encoder,
            "syns",
            "SYNs not accepted, by outcome",
            "outcome",
            &[
                ("refused_full", e.syns_refused),
                ("refused_by_app", e.syns_refused_by_app),
                ("ignored_by_app", e.syns_ignored_by_app),
                ("half_open_evicted", e.half_open_evicted),
                ("half_open_expired", e.half_open_expired),
            ],
        )?;
        counter(&mut encoder, "resets_sent", "RESETs sent", e.resets_sent)?;
        counters_by(
            &mut encoder,
            "icmp_port_unreachable",
            "ICMP port unreachables read, by outcome",
            "outcome",
            &[
                ("refused_dial", e.dials_refused_by_icmp),
                ("completed_close", e.closes_completed_by_icmp),
                ("ignored", e.icmp_ignored),
            ],
        )?;
        counter(
            &mut encoder,
            "resets_rate_limited",
            "RESETs held back by the rate limit",
            e.resets_rate_limited,
        )?;
        Ok(())
    }
}
