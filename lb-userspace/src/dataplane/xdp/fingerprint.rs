//! Pick fingerprints of the tables the dataplane wrote, hashed off the path to serving: each
//! written table is queued to one background thread at the lowest CPU priority, which reads it
//! back from the rings map (no second Maglev build) and notes its fingerprint with the ring.
//! Until then `lb status` shows the fingerprint as `desired::PENDING`. A table whose area was
//! rewritten or freed while it was being read, or a map that cannot be mapped, is built again
//! from its ring instead: the value is always MD5 of the head and the table (`desired::digest`).

use std::{
    os::fd::{AsFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering, fence},
        mpsc,
    },
};

use crate::desired::{PickDigest, Ring};

/// Held by the dataplane while a ring area holds the table a job reads: dropped (and so marked
/// stale) before the area is written again or its region freed.
#[derive(Debug)]
pub(super) struct AreaGuard(Arc<AtomicBool>);

impl AreaGuard {
    pub(super) fn new() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Drop for AreaGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
        // The area's next writes come after this in every thread's view.
        fence(Ordering::SeqCst);
    }
}

/// One written table to fingerprint.
pub(super) struct Job {
    pub ring: Ring,
    /// `desired::pick_head` of the service.
    pub head: Vec<u8>,
    /// The rings map's entry width, and where the table lies in it, in entries.
    pub width: super::rings::Width,
    pub offset: u32,
    pub len: u32,
    /// Real id of each index of the service's reals (entry `i` is `ids[ring[i]]`).
    pub ids: Vec<u32>,
    written: Arc<AtomicBool>,
}

impl Job {
    pub(super) fn new(
        ring: Ring,
        head: Vec<u8>,
        (width, offset, len): (super::rings::Width, u32, u32),
        ids: Vec<u32>,
        guard: &AreaGuard,
    ) -> Self {
        Self { ring, head, width, offset, len, ids, written: guard.0.clone() }
    }
}

/// The background hasher: started with the first job, ends when the dataplane drops it.
#[derive(Default)]
pub(super) struct Hasher {
    tx: Option<mpsc::Sender<Job>>,
}

impl Hasher {
    /// Queues `job` (marking its fingerprint pending); `rings` gives the rings map's descriptor
    /// when the thread must be started. Without a thread the fingerprint is left to be built
    /// when asked for, as before.
    pub(super) fn queue(&mut self, job: Job, rings: impl FnOnce() -> Option<OwnedFd>) {
        if self.tx.is_none() {
            self.tx = rings().and_then(start);
        }
        let Some(tx) = &self.tx else { return };
        if !job.ring.fingerprint_pending(&job.head) {
            return; // known already, or queued before
        }
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            // The thread is gone: no pending mark may outlive it.
            job.ring.note_fingerprint(&job.head, Some(rebuilt(&job)));
            self.tx = None;
        }
    }
}

fn start(fd: OwnedFd) -> Option<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new().name("lb-fingerprints".into()).spawn(move || {
        // The lowest priority: the fingerprints wait for everything else (start-up's builds,
        // reloads, checks). Failing to lower it only costs their share of the CPU.
        // SAFETY: plain syscalls on this thread's own id.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        }
        for job in rx {
            let f = read_back(&fd, &job).unwrap_or_else(|| rebuilt(&job));
            job.ring.note_fingerprint(&job.head, Some(f));
        }
    });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the fingerprint thread: fingerprints are built when asked for");
            None
        }
    }
}

/// The fingerprint from the table as the map holds it; `None` when that cannot be trusted (the
/// area was rewritten meanwhile, an entry names no real of the service or two of them, or the
/// map cannot be mapped).
fn read_back(fd: &OwnedFd, job: &Job) -> Option<String> {
    if !job.written.load(Ordering::SeqCst) {
        return None;
    }
    let index = Indexes::new(&job.ids);
    let mut digest = PickDigest::new(&job.head);
    let mut ok = true;
    let read = super::rings::read(fd.as_fd(), job.width, job.offset, job.len as usize, |id| {
        match index.of(id) {
            Some(i) => digest.push(i),
            None => ok = false,
        }
    });
    fence(Ordering::SeqCst);
    (read && ok && job.written.load(Ordering::SeqCst)).then(|| digest.finish())
}

/// The fingerprint from a fresh build of the ring (the fallback).
fn rebuilt(job: &Job) -> String {
    let mut digest = PickDigest::new(&job.head);
    digest.update(&job.ring.entries());
    digest.finish()
}

/// Real id → index into the service's reals, for the ids a table can hold.
struct Indexes {
    /// By id: the index, `AMBIGUOUS`, or `NONE`.
    by_id: Vec<u32>,
}

const NONE: u32 = u32::MAX;
const AMBIGUOUS: u32 = u32::MAX - 1;

impl Indexes {
    fn new(ids: &[u32]) -> Self {
        let len = ids.iter().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut by_id = vec![NONE; len];
        for (i, &id) in ids.iter().enumerate() {
            let slot = &mut by_id[id as usize];
            *slot = if *slot == NONE { i as u32 } else { AMBIGUOUS };
        }
        Self { by_id }
    }

    #[inline]
    fn of(&self, id: u32) -> Option<u32> {
        self.by_id.get(id as usize).copied().filter(|&i| i != NONE && i != AMBIGUOUS)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        dataplane::{
            Dataplane as _,
            xdp::{RingWidth, XdpDataplane, XdpLimits, XdpModeSetting, alloc::IdAlloc, rings_fd},
        },
        desired::{Desired, PENDING, pick_head},
        fixture,
        testutil::{private_netns, require_root},
    };

    const SIZE: u32 = 4093;

    /// What every director computes: MD5 of the head and the table built from the ring.
    fn reference(d: &Desired) -> Vec<String> {
        let seed = d.globals.hash_seed;
        d.services
            .iter()
            .map(|s| {
                let mut digest = PickDigest::new(&pick_head(s, seed));
                digest.update(&s.ring.entries());
                digest.finish()
            })
            .collect()
    }

    /// `lb status`'s fingerprints once none is pending (the background thread is done).
    fn settled(d: &Desired) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<String> = crate::bgp::fingerprints(d, d.globals.hash_seed)
                .into_iter()
                .map(|f| f.fingerprint)
                .collect();
            if !got.iter().any(|f| f == PENDING) {
                return got;
            }
            assert!(Instant::now() < deadline, "fingerprints still pending: {got:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// In both ring widths, with real ids as large as the width holds: fingerprints hashed from
    /// the tables as written equal the digest of the rebuilt tables, after the first apply and
    /// after a change of one table (written into another area); the read-back itself gives that
    /// value, and refuses (so the table is rebuilt instead) once the area's guard is gone or when
    /// the ids cannot be translated back.
    #[test]
    fn read_back_fingerprints_equal_the_rebuilt_tables_digest() {
        if !require_root("fingerprints read back from the rings map") {
            return;
        }
        // (max_reals, width, first real id handed out)
        let cases = [
            (64, RingWidth::U16, 1),
            (65_536, RingWidth::U16, 65_520),
            (70_000, RingWidth::U32, 69_970),
        ];
        for (max_reals, width, first_id) in cases {
            private_netns();
            let limits =
                XdpLimits { max_services: 32, max_reals, ring_entries: 64 * SIZE, flows: 1024 };
            assert_eq!(limits.ring_width(), width);
            let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load");
            dp.real_ids = IdAlloc::handing_out(&[], first_id, max_reals);
            check_read_back(&mut dp, width);
        }
    }

    fn check_read_back(dp: &mut XdpDataplane, width: RingWidth) {
        let mut d = fixture::desired(fixture::xdp_services(SIZE), vec![]);
        dp.apply(&d).expect("apply");
        assert_eq!(settled(&d), reference(&d), "{width:?}: after the first apply");
        // A weight change: a new table, a new area.
        d.services[0].reals[1].weight = 5;
        fixture::rebuild_ring(&mut d.services[0]);
        dp.apply(&d).expect("second apply");
        assert_eq!(settled(&d), reference(&d), "{width:?}: after a table change");

        // The read-back alone, on service 0's live area.
        let fd = rings_fd(&mut dp.ebpf).expect("rings fd");
        let svc = &d.services[0];
        let want = reference(&d)[0].clone();
        let slot = dp.services.get_mut(&svc.key).expect("slot");
        let area = slot.active.expect("live area");
        let table = slot.areas[area].clone().expect("written table");
        let offset = slot.ring_base + area as u32 * slot.table_size;
        let head = pick_head(svc, d.globals.hash_seed);
        let job = |ids: Vec<u32>, guard: &AreaGuard, width| {
            Job::new(table.ring.clone(), head.clone(), (width, offset, SIZE), ids, guard)
        };
        let guard = slot.written[area].as_ref().expect("guard");
        let ok = job(table.ids.clone(), guard, width);
        assert_eq!(read_back(&fd, &ok).as_deref(), Some(&*want), "{width:?}: {:?}", table.ids);
        let other = if width == RingWidth::U16 { RingWidth::U32 } else { RingWidth::U16 };
        assert_eq!(read_back(&fd, &job(table.ids.clone(), guard, other)), None, "other width");
        let mut twice = table.ids.clone();
        twice.push(table.ids[0]);
        assert_eq!(read_back(&fd, &job(twice, guard, width)), None, "an id held by two reals");
        assert_eq!(read_back(&fd, &job(vec![], guard, width)), None, "ids naming no real");
        slot.written[area] = None;
        assert_eq!(read_back(&fd, &ok), None, "the area was given up");
        assert_eq!(rebuilt(&ok), want, "the fallback");
    }

    /// Tables built ahead of the first apply (start-up builds them while the program loads) are
    /// what it writes: taken, not built again, and the map then holds what a fresh build gives
    /// (the fingerprints read back from it equal the rebuilt tables' digests); the services
    /// whose tables were not built ahead are built and written as before.
    #[test]
    fn tables_built_ahead_are_written_as_built() {
        use std::{net::IpAddr, path::Path, sync::atomic::AtomicBool};

        use crate::{
            config::{self, test_support::AnyHost},
            dataplane::select::{self, Capabilities, Mode},
            desired::{HostFacts, Inputs, VrrpStates, build_ahead, desired_state},
            net::{Mac, iface::Interface},
        };
        if !require_root("tables built ahead written by the first apply") {
            return;
        }
        private_netns();
        let mut text = String::new();
        let mut host = HostFacts::default();
        let lo =
            Interface { name: "lo".into(), ifindex: 1, mac: Mac([0; 6]), driver: String::new() };
        host.interfaces.insert("lo".into(), lo);
        for s in 0..8 {
            text.push_str(&format!(
                "[[virtual_server]]\nvip = \"192.0.2.{}\"\nport = 80\ninterface = \"lo\"\ntable_size = {SIZE}\n",
                100 + s
            ));
            for r in 0..3 {
                let addr = format!("198.51.100.{}", 10 * s + r + 1);
                let weight = r + 1;
                text.push_str(&format!(
                    "[[virtual_server.real_server]]\naddress = \"{addr}\"\nweight = {weight}\n"
                ));
                let ip: IpAddr = addr.parse().expect("test address");
                host.neighbours.0.insert((1, ip), Mac([0x52, 0, 0, 0, 0, 1]));
            }
        }
        let config = config::parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("valid");
        let caps = Capabilities { xdp: Ok(()), ipvs: Err("none".into()) };
        let plan = select::plan(&config, Mode::Xdp, &caps).expect("plan");
        let d = desired_state(&Inputs {
            config: &config,
            host: &host,
            health: &Default::default(),
            overrides: &Default::default(),
            vrrp: &VrrpStates::default(),
            plan: &plan,
        });
        let rings: Vec<_> = d.services.iter().map(|s| s.ring.clone()).collect();
        // Half of them, as when the load ends first.
        assert_eq!(build_ahead(&rings[..4], 2, usize::MAX, &AtomicBool::new(false)), 4);
        let limits =
            XdpLimits { max_services: 32, max_reals: 64, ring_entries: 64 * SIZE, flows: 1024 };
        let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load");
        dp.apply(&d).expect("apply");
        assert!(rings.iter().all(|r| !r.held_ahead()), "every table built ahead was taken");
        assert_eq!(dp.ring_writes, 8 * u64::from(SIZE), "every entry written once");
        assert_eq!(settled(&d), reference(&d), "the map holds fresh builds' tables");
    }

    /// Ids translate back to indexes; an id held by two reals, or by none, cannot be.
    #[test]
    fn ids_translate_back_to_indexes_unless_ambiguous() {
        let ix = Indexes::new(&[7, 3, 0, 9, 3]);
        let cases = [(7, Some(0)), (0, Some(2)), (9, Some(3)), (3, None), (5, None), (10, None)];
        for (id, want) in cases {
            assert_eq!(ix.of(id), want, "id {id}");
        }
        assert_eq!(Indexes::new(&[]).of(0), None);
    }
}
