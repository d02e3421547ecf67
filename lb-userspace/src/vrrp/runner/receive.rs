//! The receive side: one loop per (interface, family) socket hands each advert to the instance
//! its VRID names.

use super::*;

/// From the receive loop to an instance.
#[derive(Debug)]
pub(super) enum Inbound {
    /// Parsed; the instance applies its own [`Expect::check`].
    Advert { rx: Received, ip: IpMeta },
    /// Failed [`packet::parse`] (the VRID byte pointed at this instance).
    Rejected { error: PacketError, src: IpAddr },
}

/// Reads one interface's socket (switching when it is opened again) and hands each advert to
/// the instance its VRID names.
pub(super) async fn receive_loop(
    ifname: String,
    mut slot: SocketSlot,
    routes: HashMap<u8, (usize, mpsc::Sender<Inbound>)>,
    status: Arc<watch::Sender<VrrpStatus>>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut logs = RateLimit::new(LOG_EVERY);
    // Without the rebind task (it only ends with the engine) the last socket stays in use.
    let mut watching = true;
    loop {
        let current = slot.borrow_and_update().clone();
        let Some(socket) = current else {
            // The interface is missing: wait for its new socket.
            if !watching || slot.changed().await.is_err() {
                return;
            }
            continue;
        };
        let got = tokio::select! {
            changed = slot.changed(), if watching => {
                watching = changed.is_ok();
                continue;
            }
            got = socket.recv(&mut buf) => got,
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                if let Some(held) = logs.allow("recv", Instant::now()) {
                    tracing::warn!(interface = %ifname, held_back = held, "receiving VRRP: {e}");
                }
                // Do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (ip, range) = match got {
            Ok(v) => v,
            Err(e) => {
                status.send_if_modified(|s| {
                    s.malformed += 1;
                    false
                });
                if let Some(held) = logs.allow("malformed", Instant::now()) {
                    tracing::debug!(interface = %ifname, held_back = held,
                        "malformed VRRP packet: {e}");
                }
                continue;
            }
        };
        let payload = &buf[range];
        let target = match route(payload, |vrid| routes.contains_key(&vrid)) {
            Route::Instance(vrid) => routes.get(&vrid),
            Route::Foreign => {
                status.send_if_modified(|s| {
                    s.foreign_adverts += 1;
                    false
                });
                None
            }
            Route::Malformed => {
                status.send_if_modified(|s| {
                    s.malformed += 1;
                    false
                });
                if let Some(held) = logs.allow("malformed", Instant::now()) {
                    tracing::debug!(interface = %ifname, held_back = held, len = payload.len(),
                        "VRRP message too short to carry a VRID");
                }
                None
            }
        };
        let Some((idx, tx)) = target else { continue };
        let msg = match packet::parse(payload, &ip) {
            Ok(rx) => Inbound::Advert { rx, ip },
            Err(error) => Inbound::Rejected { error, src: ip.src },
        };
        if tx.try_send(msg).is_err() {
            status.send_if_modified(|s| {
                s.instances[*idx].counters.queue_full += 1;
                false
            });
        }
    }
}

/// Where the receive loop hands a VRRP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// To the instance running this VRID (which applies every other check).
    Instance(u8),
    /// A VRID no instance on the interface runs: another router's.
    Foreign,
    /// Not even a VRID.
    Malformed,
}

/// Routes a VRRP message by its VRID byte; `ours` says whether an instance runs a VRID.
pub(super) fn route(payload: &[u8], ours: impl Fn(u8) -> bool) -> Route {
    match payload.get(1) {
        Some(&vrid) if ours(vrid) => Route::Instance(vrid),
        Some(_) => Route::Foreign,
        None => Route::Malformed,
    }
}
