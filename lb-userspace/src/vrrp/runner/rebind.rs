//! Sockets follow their interface: closed while it is missing, opened again when it is back.

use super::*;

/// What to do with the socket of an interface, from the interface it is bound to (`None`: no
/// socket) and the one of that name now (`None`: it does not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebind {
    Keep,
    /// The interface is gone: close the socket.
    Close,
    /// The interface is (back): open the socket on it.
    Open(LinkId),
}

/// See [`Rebind`].
pub fn rebind(bound: Option<LinkId>, now: Option<LinkId>) -> Rebind {
    match (bound, now) {
        (Some(b), Some(n)) if b == n => Rebind::Keep,
        (_, Some(n)) => Rebind::Open(n),
        (Some(_), None) => Rebind::Close,
        (None, None) => Rebind::Keep,
    }
}

/// One socket the rebind task keeps bound to its interface.
pub(super) struct Bound {
    pub(super) ifname: String,
    pub(super) family: Family,
    pub(super) multicast: bool,
    /// The interface the current socket is bound to (`None`: no socket).
    pub(super) link: Option<LinkId>,
    pub(super) tx: watch::Sender<Option<Arc<VrrpSocket>>>,
}

/// Follows the interfaces and opens each socket again when its interface is created again (or
/// closes it while the interface is missing). A failed open is retried every
/// [`REOPEN_RETRY`].
pub(super) async fn rebind_loop(
    mut bound: Vec<Bound>,
    mut links: watch::Receiver<track::LinkIndexes>,
) {
    loop {
        let indexes = links.borrow_and_update().clone();
        let mut retry = false;
        for b in &mut bound {
            let now = indexes.get(&b.ifname).copied();
            match rebind(b.link, now) {
                Rebind::Keep => {}
                Rebind::Close => {
                    tracing::warn!(interface = %b.ifname, family = %b.family,
                        "interface gone: VRRP socket closed until it is back");
                    b.link = None;
                    b.tx.send_replace(None);
                }
                Rebind::Open(link) => {
                    let ifindex = link.index;
                    match VrrpSocket::open(&b.ifname, ifindex, b.family, b.multicast) {
                        Ok(sock) => {
                            tracing::info!(interface = %b.ifname, family = %b.family, ifindex,
                                "interface (re)created: VRRP socket opened again");
                            b.link = Some(link);
                            b.tx.send_replace(Some(Arc::new(sock)));
                        }
                        Err(e) => {
                            tracing::warn!(interface = %b.ifname, family = %b.family, ifindex,
                                "opening the VRRP socket again: {e} (retrying)");
                            b.link = None;
                            b.tx.send_replace(None);
                            retry = true;
                        }
                    }
                }
            }
        }
        tokio::select! {
            changed = links.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REOPEN_RETRY), if retry => {}
        }
    }
}
