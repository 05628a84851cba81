//! Every bound of the transport, in one place.

use std::time::Duration;

use crate::QuicError;

/// The bounds of an endpoint. Every queue, buffer and timer has a named
/// limit here; [`Limits::default`] suits a LAN or WAN cluster.
///
/// Memory per connected peer is bounded by about
/// `2 * send_queue_bytes_max` (outgoing, both lanes) plus
/// `connection_receive_window_bytes` (incoming data quinn buffers) plus
/// `2 * frame_bytes_max` (a partly received frame per lane). Each endpoint
/// also holds one UDP receive buffer of `udp_payload_bytes_max * 64 * 32`
/// bytes (64 coalesced segments, 32 datagrams per receive call), reserved
/// up front and touched only as datagrams arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest encoded message (frame payload) sent or accepted. A peer
    /// announcing a larger frame is disconnected.
    pub frame_bytes_max: usize,
    /// Messages queued per peer and lane before new ones are dropped.
    pub send_queue_messages_max: usize,
    /// Bytes queued per peer and lane before new ones are dropped.
    pub send_queue_bytes_max: usize,
    /// Received messages per lane waiting for the application before the
    /// readers stop reading (back-pressure through QUIC flow control).
    pub receive_queue_messages_max: usize,
    /// Frames written to a stream in one write call (coalescing).
    pub write_batch_messages_max: usize,
    /// Concurrent unidirectional streams a peer may open (one per lane is
    /// used; a peer opening more is disconnected).
    pub streams_uni_max: u32,
    /// QUIC flow-control window of one stream.
    pub stream_receive_window_bytes: u32,
    /// QUIC flow-control window of one connection.
    pub connection_receive_window_bytes: u32,
    /// Bytes in flight to one peer.
    pub send_window_bytes: u64,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive packets are sent this often on an otherwise idle connection.
    pub keep_alive_interval: Duration,
    /// A TLS handshake (and a peer's first stream byte) must finish within this.
    pub handshake_timeout: Duration,
    /// First delay before redialing a replica.
    pub reconnect_backoff_min: Duration,
    /// Largest delay between dial attempts (doubling from the minimum).
    pub reconnect_backoff_max: Duration,
    /// Incoming handshakes in progress at once.
    pub incoming_handshakes_max: usize,
    /// The largest UDP payload this endpoint accepts, and the upper bound of
    /// path MTU discovery for what it sends. Packets start at QUIC's safe
    /// 1200 bytes and grow only as far as probes get through, so a value
    /// above a path's MTU costs a few lost probes, not lost data. The
    /// default, 1452, fits a 1500-byte Ethernet frame over IPv6 (quinn's own
    /// bound); 8952 suits 9000-byte jumbo frames. Raising it to 8952 on
    /// loopback made no measurable difference to the benchmark peak (UDP
    /// segmentation offload already hands the kernel many packets per system
    /// call) and grows the receive buffer (see above) in proportion.
    pub udp_payload_bytes_max: u16,
    /// The kernel buffer asked for the endpoint's UDP socket, for receiving
    /// (`SO_RCVBUF`) and for sending (`SO_SNDBUF`). Datagrams that arrive
    /// while the receive buffer is full are dropped by the kernel (the
    /// `drops` column of `/proc/net/udp`) and QUIC must resend them. The
    /// Linux default (`net.core.rmem_default`, 208 KiB) overflowed at a
    /// primary taking ~90k requests/s on loopback; Linux caps the value at
    /// `net.core.rmem_max` / `wmem_max` (the endpoint logs what it got).
    pub udp_socket_buffer_bytes: usize,
}

/// QUIC's smallest allowed maximum UDP payload (RFC 9000 section 14).
pub const UDP_PAYLOAD_BYTES_MIN: u16 = 1200;
/// The largest UDP payload over IPv6 (65,535 minus the 8-byte UDP header).
pub const UDP_PAYLOAD_BYTES_MAX: u16 = 65_527;

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: pbft_types::MESSAGE_BYTES_MAX_DEFAULT,
            send_queue_messages_max: 8192,
            send_queue_bytes_max: 32 * 1024 * 1024,
            receive_queue_messages_max: 8192,
            write_batch_messages_max: 512,
            streams_uni_max: 2,
            stream_receive_window_bytes: 8 * 1024 * 1024,
            connection_receive_window_bytes: 24 * 1024 * 1024,
            send_window_bytes: 24 * 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            incoming_handshakes_max: 256,
            udp_payload_bytes_max: 1452,
            udp_socket_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Checks that every limit is usable and that they fit together.
    ///
    /// # Errors
    /// [`QuicError::InvalidLimit`] naming the first bad field.
    pub fn validate(&self) -> Result<(), QuicError> {
        let bad = |name: &'static str, reason: &str| {
            Err(QuicError::InvalidLimit {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.frame_bytes_max == 0 || u32::try_from(self.frame_bytes_max).is_err() {
            return bad("frame_bytes_max", "must be in 1..=u32::MAX");
        }
        if self.send_queue_bytes_max < self.frame_bytes_max
            || u32::try_from(self.send_queue_bytes_max).is_err()
        {
            return bad(
                "send_queue_bytes_max",
                "must be at least frame_bytes_max and at most u32::MAX",
            );
        }
        if self.send_queue_messages_max == 0 {
            return bad("send_queue_messages_max", "must be positive");
        }
        if self.receive_queue_messages_max == 0 {
            return bad("receive_queue_messages_max", "must be positive");
        }
        if self.write_batch_messages_max == 0 {
            return bad("write_batch_messages_max", "must be positive");
        }
        if self.streams_uni_max < 2 {
            return bad("streams_uni_max", "must allow one stream per lane (2)");
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return bad("keep_alive_interval", "must be shorter than idle_timeout");
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return bad(
                "reconnect_backoff_min",
                "must be positive and at most reconnect_backoff_max",
            );
        }
        if self.incoming_handshakes_max == 0 {
            return bad("incoming_handshakes_max", "must be positive");
        }
        if !(UDP_PAYLOAD_BYTES_MIN..=UDP_PAYLOAD_BYTES_MAX).contains(&self.udp_payload_bytes_max) {
            return bad(
                "udp_payload_bytes_max",
                &format!("must be in {UDP_PAYLOAD_BYTES_MIN}..={UDP_PAYLOAD_BYTES_MAX}"),
            );
        }
        if !(UDP_SOCKET_BUFFER_BYTES_MIN..=UDP_SOCKET_BUFFER_BYTES_MAX)
            .contains(&self.udp_socket_buffer_bytes)
        {
            return bad(
                "udp_socket_buffer_bytes",
                &format!(
                    "must be in {UDP_SOCKET_BUFFER_BYTES_MIN}..={UDP_SOCKET_BUFFER_BYTES_MAX}"
                ),
            );
        }
        Ok(())
    }
}

/// The smallest UDP socket buffer accepted: a few datagrams of the largest
/// size.
pub const UDP_SOCKET_BUFFER_BYTES_MIN: usize = 64 * 1024;
/// The largest UDP socket buffer accepted (the kernel takes an `int`, and
/// doubles what it grants).
pub const UDP_SOCKET_BUFFER_BYTES_MAX: usize = 1024 * 1024 * 1024;

/// Asks the kernel for `limits.udp_socket_buffer_bytes` of receive and send
/// buffer on `socket`, and returns the receive buffer granted, also as the
/// gauge `pbft_quic_udp_receive_buffer_bytes` (with a log line when the
/// kernel's cap, `net.core.rmem_max`, kept it below what was asked).
/// Failing to set it is not fatal: the socket keeps the system default.
pub(crate) fn size_socket_buffers(socket: &std::net::UdpSocket, limits: &Limits) -> Option<usize> {
    let asked = limits.udp_socket_buffer_bytes;
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(asked) {
        tracing::warn!(asked, error = %e, "cannot size the UDP receive buffer; keeping the default");
    }
    if let Err(e) = sock.set_send_buffer_size(asked) {
        tracing::warn!(asked, error = %e, "cannot size the UDP send buffer; keeping the default");
    }
    let granted = granted_from_reported(sock.recv_buffer_size().ok()?);
    metrics::gauge!("pbft_quic_udp_receive_buffer_bytes").set(granted as f64);
    if granted < asked {
        tracing::info!(
            asked,
            granted,
            "the kernel granted a smaller UDP receive buffer than asked; raise \
             net.core.rmem_max to avoid drops under load"
        );
    }
    Some(granted)
}

/// The buffer size granted, from what `getsockopt(SO_RCVBUF)` reports:
/// Linux reports twice the size it granted (the doubled part is its
/// bookkeeping share), other systems the size itself.
fn granted_from_reported(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's cap on a socket's receive buffer, as set by the system.
    #[cfg(target_os = "linux")]
    fn rmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_socket_gets_the_receive_buffer_asked_up_to_the_kernel_cap() -> std::io::Result<()> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let limits = Limits {
            udp_socket_buffer_bytes: 2 * 1024 * 1024,
            ..Limits::default()
        };
        let granted = size_socket_buffers(&socket, &limits);
        // Linux grants min(asked, rmem_max) and reports twice that.
        let expected = limits.udp_socket_buffer_bytes.min(rmem_max());
        assert_eq!(granted, Some(expected), "rmem_max {}", rmem_max());
        let reported = socket2::SockRef::from(&socket).recv_buffer_size()?;
        assert_eq!(reported, 2 * expected);
        // Asked above the cap: the cap is what is granted (and logged).
        let capped = Limits {
            udp_socket_buffer_bytes: (2 * rmem_max())
                .clamp(UDP_SOCKET_BUFFER_BYTES_MIN, UDP_SOCKET_BUFFER_BYTES_MAX),
            ..Limits::default()
        };
        let granted = size_socket_buffers(&socket, &capped);
        assert_eq!(
            granted,
            Some(capped.udp_socket_buffer_bytes.min(rmem_max()))
        );
        Ok(())
    }
}
