//! The VRRP state machine of one virtual router (RFC 5798 6.4, RFC 3768 6.4), with keepalived's
//! additions: FAULT for failed tracked interfaces/scripts, STOP, tracking weights, preempt delay,
//! sync groups and gratuitous-ARP bursts.
//!
//! It is pure and deterministic: no clock, sockets or timers. The caller feeds [`Event`]s with the
//! current time, performs the returned [`Action`]s in order, and fires [`Event::Timer`] at
//! [`Instance::next_deadline`]. That keeps every failover path testable with a fake clock.
//!
//! Timer arithmetic is done in microseconds, exactly like keepalived: Skew_Time is the RFC 5798
//! formula `((256 − priority) × Master_Adver_Interval) / 256` evaluated in µs, so priority 100 at
//! 1 s gives 609 375 µs, not the 60 cs that truncating to whole centiseconds would give.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{
    AddressCheck, Advert, Auth, Expect, Family, Kind, MAX_V3_INTERVAL_CS, VRRP_TTL, Version,
};

/// Priority of the address owner: it starts as master and is never changed by tracking.
pub const OWNER_PRIORITY: u8 = 255;

/// Where a virtual router is. `Initialize` is the RFC's state before startup; `Stop` is
/// keepalived's state after shutdown (it runs `notify_stop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started yet.
    Initialize,
    /// Listening to the master, ready to take over when it goes quiet.
    Backup,
    /// Holding the virtual addresses and advertising.
    Master,
    /// A tracked interface or script failed (or a sync group peer did): neither advertising nor
    /// taking over.
    Fault,
    /// Shut down.
    Stop,
}

impl State {
    /// The name keepalived uses in logs and notify scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
            State::Stop => "STOP",
        }
    }

    /// Whether the instance has been started and not stopped.
    fn running(self) -> bool {
        matches!(self, State::Backup | State::Master | State::Fault)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gratuitous ARP / unsolicited NA bursts on becoming master (keepalived `garp_master_repeat`
/// and `garp_master_delay`): switches and hosts must learn the new owner of the VIPs at once,
/// and again a little later in case the first burst was lost while links were settling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Garp {
    /// Messages per burst; 0 sends none.
    pub repeat: u32,
    /// Delay of the second burst after the first; zero sends only one burst.
    pub delay: Duration,
}

impl Default for Garp {
    /// keepalived's defaults: 5 at once, 5 more after 5 s.
    fn default() -> Garp {
        Garp { repeat: 5, delay: Duration::from_secs(5) }
    }
}

/// The configuration of one virtual router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// VRRP version; all routers of a VRID must agree.
    pub version: Version,
    /// Address family of the adverts and virtual addresses.
    pub family: Family,
    /// Base priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// Advertisement_Interval in centiseconds. VRRPv2 carries whole seconds, so v2 values are
    /// rounded up to a multiple of 100 like keepalived does.
    pub advert_interval_cs: u16,
    /// Preempt_Mode: a higher-priority backup takes over from a lower-priority master. Off is
    /// keepalived's `nopreempt`.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: after seeing a lower-priority master (as after startup), keep
    /// accepting it this long before preempting. Zero preempts at once.
    pub preempt_delay: Duration,
    /// Our primary address: the adverts' source, compared on equal priority.
    pub primary_address: IpAddr,
    /// keepalived's `unicast_peer`: when not empty, adverts from anyone else are ignored.
    pub unicast_peers: Vec<IpAddr>,
    /// RFC 5798 Accept_Mode: whether a non-owner master accepts packets addressed to the VIPs.
    /// Not used by the machine; carried for the caller that programs the dataplane.
    pub accept_mode: bool,
    /// Gratuitous ARP / NA bursts on becoming master.
    pub garp: Garp,
    /// Adverts missed before the master is declared down (keepalived `down_timer_adverts`; the
    /// RFC's 3).
    pub down_timer_adverts: u32,
    /// keepalived's `lower_prio_no_advert`: when false (its default) a master that hears a
    /// lower-priority advert answers at once, so a split brain ends within one round trip (at
    /// most once per advert interval, unlike keepalived, so a flood is not echoed).
    pub lower_prio_no_advert: bool,
    /// keepalived's `skip_check_adv_addr`: a backup does not compare the virtual addresses of
    /// adverts from the master it already follows with ours (see [`Instance::address_check`]).
    pub skip_check_adv_addr: bool,
}

impl Settings {
    /// Defaults as in keepalived: advert interval 1 s, preempt, no delay, multicast, 5+5 GARPs,
    /// 3 missed adverts. The family follows the primary address.
    pub fn new(vrid: u8, version: Version, priority: u8, primary_address: IpAddr) -> Settings {
        Settings {
            vrid,
            version,
            family: Family::of(primary_address),
            priority,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_address,
            unicast_peers: Vec::new(),
            accept_mode: false,
            garp: Garp::default(),
            down_timer_adverts: 3,
            lower_prio_no_advert: false,
            skip_check_adv_addr: false,
        }
    }
}

/// Why [`Settings`] cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// VRID 0 is reserved.
    #[error("VRID must be 1..=255")]
    VridZero,
    /// Priority 0 is reserved for "master is leaving".
    #[error("priority must be 1..=255")]
    PriorityZero,
    /// v2: 1..=255 s; v3: 1..=4095 cs.
    #[error("advert interval {cs} cs is out of range for {version}")]
    IntervalOutOfRange {
        /// Interval given, centiseconds.
        cs: u16,
        /// Version in use.
        version: Version,
    },
    /// VRRPv2 is IPv4-only.
    #[error("VRRPv2 cannot run over IPv6; use version 3")]
    V2OverIpv6,
    /// The primary address or a unicast peer is of the other family.
    #[error("address {addr} is not {family}")]
    FamilyMismatch {
        /// The offending address.
        addr: IpAddr,
        /// The instance's family.
        family: Family,
    },
    /// At least one missed advert is needed to detect a dead master.
    #[error("down_timer_adverts must be at least 1")]
    ZeroDownTimerAdverts,
}

/// What happens to a virtual router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start (RFC "Startup"): from `Initialize` or `Stop`.
    Startup,
    /// Start as the MASTER the previous process was (a hitless agent restart: the pinned
    /// dataplane is adopted and the VIPs are still on the interface), from `Initialize` or `Stop`.
    ///
    /// The instance is MASTER at once (VIPs kept, dataplane forwarding) but stays quiet for one
    /// Master_Adver_Interval plus Skew_Time, listening: a master that took over while we were
    /// away would be heard by then. Hearing one, it steps down to BACKUP and takes that advert
    /// as a fresh BACKUP would (preempting only where a fresh start would); hearing none, it
    /// sends its first advert and goes on as MASTER, sending no gratuitous ARP (the neighbours
    /// still point at us). So a resume never claims more than a fresh start would — no split
    /// brain against a peer that outranks us or that `nopreempt` protects, and no gratuitous ARP
    /// pulling traffic from a live master — at the price of a narrower window: the peers' backups
    /// take over unless we advertise again within their Master_Down_Interval (3 × the interval
    /// plus their skew) of the previous process's last advert, so the restart must take under
    /// about 2 intervals. Longer, the peer has taken over and the resume ends as a fresh start.
    /// The owner (priority 255) and an instance in FAULT start as after [`Event::Startup`].
    Resume,
    /// Stop (RFC "Shutdown"): a master hands over with a priority-0 advert.
    Shutdown,
    /// A valid advert for our VRID (see [`Event::advert`]), already checked by the packet layer.
    AdvertReceived {
        /// IP source: the sender's primary address.
        from: IpAddr,
        /// Sender's priority (0 = the master is leaving).
        priority: u8,
        /// Sender's advert interval, centiseconds (v2: seconds × 100).
        max_advert_interval: u16,
        /// The virtual addresses it carries (kept for status).
        addresses: Vec<IpAddr>,
    },
    /// The deadline from [`Instance::next_deadline`] was reached.
    Timer,
    /// The tracked interfaces/scripts changed: `fault` is true while any of them is down, and
    /// `priority_delta` is the current sum of the weights of those in effect (not an increment).
    TrackChanged {
        /// Any tracked object failed.
        fault: bool,
        /// Sum of the tracking weights now in effect.
        priority_delta: i32,
    },
    /// Another member of our `vrrp_sync_group` changed state; members move together.
    SyncGroup {
        /// The state the peer entered.
        peer_state: State,
    },
}

impl Event {
    /// The event for an accepted advert.
    pub fn advert(from: IpAddr, advert: &Advert) -> Event {
        Event::AdvertReceived {
            from,
            priority: advert.priority,
            max_advert_interval: u16::try_from(advert.interval_cs()).unwrap_or(u16::MAX),
            addresses: advert.addresses.clone(),
        }
    }
}

/// Why an advert changed nothing; the caller counts these (a master seeing lower-priority
/// adverts means another router thinks it is master: a split brain being resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// The instance is not started (or is stopped).
    NotRunning,
    /// In FAULT adverts are not acted on.
    Fault,
    /// Unicast peers are configured and the sender is not one of them.
    NotAPeer,
    /// The sender's address is of the other family.
    WrongFamily,
    /// Our own advert reflected back (a hairpin, a loop, or a forgery with our source).
    OwnAddress,
    /// Lower priority (or equal priority from a lower address) than ours, and we preempt.
    LowerPriority,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority.
    SendAdvert {
        /// Priority to advertise (our effective priority).
        priority: u8,
    },
    /// Send an advert with priority 0, so a backup takes over after Skew_Time instead of
    /// Master_Down_Interval.
    SendAdvertPriorityZero,
    /// Add the VIPs, bring the dataplane up for them; GARPs follow as [`Action::ScheduleGarp`].
    BecomeMaster,
    /// Remove the VIPs (if held) and stop serving them.
    BecomeBackup,
    /// Remove the VIPs (if held) and stop serving them.
    BecomeFault,
    /// Remove the VIPs (if held): the instance is shut down.
    BecomeStopped,
    /// We are no longer master: cancel pending GARP bursts.
    StopSending,
    /// Send `count` gratuitous ARPs (IPv4) or unsolicited NAs (IPv6) for every VIP, `after` from
    /// now.
    ScheduleGarp {
        /// Delay before the burst.
        after: Duration,
        /// Messages per VIP.
        count: u32,
    },
    /// Run the notify script(s) for this state.
    Notify {
        /// The state entered.
        state: State,
    },
    /// An advert was ignored; for counters and rate-limited logs.
    AdvertIgnored {
        /// Why.
        reason: IgnoreReason,
    },
}

/// The master a backup currently listens to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterInfo {
    /// Its primary address.
    pub address: IpAddr,
    /// Its advertised priority.
    pub priority: u8,
    /// Its advert interval, centiseconds.
    pub advert_interval_cs: u16,
    /// The virtual addresses it advertises.
    pub addresses: Vec<IpAddr>,
}

/// RFC 5798 Skew_Time, in µs like keepalived: `(256 − priority) × Master_Adver_Interval / 256`
/// for v3; `(256 − priority) / 256` s for v2 (RFC 3768, independent of the interval).
pub fn skew_time(version: Version, priority: u8, master_adver_interval_cs: u16) -> Duration {
    let weight = 256 - u64::from(priority);
    let micros = match version {
        // cs × 10 000 µs / 256 = cs × 625 / 16.
        Version::V3 => weight * u64::from(master_adver_interval_cs) * 625 / 16,
        Version::V2 => weight * 1_000_000 / 256,
    };
    Duration::from_micros(micros)
}

/// RFC 5798 Master_Down_Interval: `down_timer_adverts` (3) × Master_Adver_Interval + Skew_Time.
pub fn master_down_interval(
    version: Version,
    priority: u8,
    master_adver_interval_cs: u16,
    down_timer_adverts: u32,
) -> Duration {
    centis(master_adver_interval_cs) * down_timer_adverts
        + skew_time(version, priority, master_adver_interval_cs)
}

/// Centiseconds as a duration.
fn centis(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Whether `a` is the greater primary address: compared as unsigned numbers, as the RFC says.
fn address_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a) > u32::from(b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) > u128::from(b),
        _ => false,
    }
}

/// One virtual router's state machine.
#[derive(Clone, Debug)]
pub struct Instance {
    settings: Settings,
    state: State,
    /// A tracked interface/script is down.
    track_fault: bool,
    /// A sync group peer is in FAULT.
    sync_fault: bool,
    /// Sum of tracking weights in effect.
    priority_delta: i32,
    /// Master_Adver_Interval: ours, or the v3 master's once a backup has heard it.
    master_adver_interval_cs: u16,
    /// Master_Down_Timer (backup).
    master_down_at: Option<Instant>,
    /// Adver_Timer (master).
    advert_at: Option<Instant>,
    /// While preempt_delay runs: when we may start preempting.
    preempt_after: Option<Instant>,
    /// The master we listen to (backup).
    master: Option<MasterInfo>,
    /// MASTER after [`Event::Resume`], still listening before its first advert.
    resuming: bool,
    /// When a master last answered a lower-priority or priority-0 advert: at most once per
    /// Advertisement_Interval, so forged adverts cannot make it send one advert per advert.
    answered_at: Option<Instant>,
}

impl Instance {
    /// Validates the settings; the instance starts in `Initialize` until [`Event::Startup`].
    pub fn new(mut settings: Settings) -> Result<Instance, SettingsError> {
        if settings.vrid == 0 {
            return Err(SettingsError::VridZero);
        }
        if settings.priority == 0 {
            return Err(SettingsError::PriorityZero);
        }
        if settings.down_timer_adverts == 0 {
            return Err(SettingsError::ZeroDownTimerAdverts);
        }
        if settings.version == Version::V2 && settings.family == Family::V6 {
            return Err(SettingsError::V2OverIpv6);
        }
        let cs = settings.advert_interval_cs;
        let max = match settings.version {
            Version::V2 => 255 * 100,
            Version::V3 => MAX_V3_INTERVAL_CS,
        };
        if cs == 0 || cs > max {
            return Err(SettingsError::IntervalOutOfRange { cs, version: settings.version });
        }
        if settings.version == Version::V2 {
            // Sub-second v2 intervals cannot be carried; keepalived rounds them up.
            settings.advert_interval_cs = cs.div_ceil(100) * 100;
        }
        let family = settings.family;
        let addrs = std::iter::once(&settings.primary_address).chain(&settings.unicast_peers);
        if let Some(&addr) = addrs.into_iter().find(|a| Family::of(**a) != family) {
            return Err(SettingsError::FamilyMismatch { addr, family });
        }
        let master_adver_interval_cs = settings.advert_interval_cs;
        Ok(Instance {
            settings,
            state: State::Initialize,
            track_fault: false,
            sync_fault: false,
            priority_delta: 0,
            master_adver_interval_cs,
            master_down_at: None,
            advert_at: None,
            preempt_after: None,
            master: None,
            resuming: false,
            answered_at: None,
        })
    }

    /// The settings in use (v2 intervals rounded to whole seconds).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Base priority plus tracking weights, clamped to 1..=254; the owner stays at 255.
    pub fn effective_priority(&self) -> u8 {
        let base = self.settings.priority;
        if base == OWNER_PRIORITY {
            return OWNER_PRIORITY;
        }
        let p = (i64::from(base) + i64::from(self.priority_delta)).clamp(1, 254);
        u8::try_from(p).unwrap_or(254)
    }

    /// Master_Adver_Interval in centiseconds.
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// Skew_Time at our current effective priority and Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(self.settings.version, self.effective_priority(), self.master_adver_interval_cs)
    }

    /// Master_Down_Interval at our current effective priority and Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(
            self.settings.version,
            self.effective_priority(),
            self.master_adver_interval_cs,
            self.settings.down_timer_adverts,
        )
    }

    /// The master a backup listens to, if it has heard one.
    pub fn master(&self) -> Option<&MasterInfo> {
        self.master.as_ref()
    }

    /// When the caller must deliver [`Event::Timer`] (Master_Down_Timer or Adver_Timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backup => self.master_down_at,
            State::Master => self.advert_at,
            _ => None,
        }
    }

    /// The advert to send for [`Action::SendAdvert`] (`priority` from the action, 0 for
    /// [`Action::SendAdvertPriorityZero`]). `auth` only applies to VRRPv2.
    pub fn advert(&self, priority: u8, addresses: Vec<IpAddr>, auth: Auth) -> Advert {
        let cs = self.settings.advert_interval_cs;
        let kind = match self.settings.version {
            Version::V2 => {
                Kind::V2 { advert_int_secs: u8::try_from(cs / 100).unwrap_or(u8::MAX), auth }
            }
            Version::V3 => Kind::V3 { max_advert_int_cs: cs },
        };
        Advert { vrid: self.settings.vrid, priority, addresses, kind }
    }

    /// How the virtual addresses of an advert from `from` must be checked: against ours,
    /// except with `skip_check_adv_addr` for the master a backup already follows (keepalived
    /// checks every advert a master hears, and those from any new sender).
    pub fn address_check(&self, from: IpAddr) -> AddressCheck {
        let following =
            self.state == State::Backup && self.master.as_ref().is_some_and(|m| m.address == from);
        if self.settings.skip_check_adv_addr && following {
            AddressCheck::Skip
        } else {
            AddressCheck::Enforce
        }
    }

    /// The packet-level receive rules for this instance.
    pub fn expect(&self, auth: Auth, addresses: Vec<IpAddr>) -> Expect {
        Expect {
            version: self.settings.version,
            vrid: self.settings.vrid,
            auth,
            advert_interval_cs: self.settings.advert_interval_cs,
            unicast: !self.settings.unicast_peers.is_empty(),
            min_unicast_ttl: VRRP_TTL,
            addresses,
        }
    }

    /// Feeds one event at time `now`; returns what the caller must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if !self.state.running() {
                    self.start_running(now, &mut out);
                }
            }
            Event::Resume => {
                if !self.state.running() {
                    self.resume(now, &mut out);
                }
            }
            Event::Shutdown => self.shutdown(&mut out),
            Event::Timer => self.timer(now, &mut out),
            Event::AdvertReceived { from, priority, max_advert_interval, addresses } => {
                let seen = MasterInfo {
                    address: from,
                    priority,
                    advert_interval_cs: max_advert_interval,
                    addresses,
                };
                self.advert_received(seen, now, &mut out);
            }
            Event::TrackChanged { fault, priority_delta } => {
                self.track_changed(fault, priority_delta, now, &mut out);
            }
            Event::SyncGroup { peer_state } => self.sync_group(peer_state, now, &mut out),
        }
        out
    }

    /// Whether something keeps us in FAULT.
    fn faulty(&self) -> bool {
        self.track_fault || self.sync_fault
    }

    /// RFC Startup (also used when leaving FAULT): the owner becomes master at once, anyone else
    /// listens for Master_Down_Interval first — keepalived does the same even with
    /// `state MASTER`.
    fn start_running(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.master_adver_interval_cs = self.settings.advert_interval_cs;
        self.preempt_after = None;
        self.master = None;
        self.resuming = false;
        if self.faulty() {
            self.enter_fault(out);
        } else if self.settings.priority == OWNER_PRIORITY {
            self.enter_master(now, out);
        } else {
            self.enter_backup(now, out);
        }
    }

    /// [`Event::Resume`]: MASTER without an advert or gratuitous ARPs yet; the first advert
    /// goes out after Master_Adver_Interval plus Skew_Time unless another master is heard first.
    fn resume(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.faulty() || self.settings.priority == OWNER_PRIORITY {
            self.start_running(now, out);
            return;
        }
        self.master_adver_interval_cs = self.settings.advert_interval_cs;
        self.preempt_after = None;
        self.master = None;
        self.master_down_at = None;
        self.state = State::Master;
        self.resuming = true;
        self.advert_at = Some(now + centis(self.settings.advert_interval_cs) + self.skew_time());
        out.push(Action::BecomeMaster);
        out.push(Action::Notify { state: State::Master });
    }

    fn enter_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.state = State::Master;
        self.master_down_at = None;
        self.master = None;
        self.advert_at = Some(now + centis(self.settings.advert_interval_cs));
        // The advert goes first so the old master drops the VIPs before our GARPs (keepalived).
        out.push(Action::SendAdvert { priority: self.effective_priority() });
        out.push(Action::BecomeMaster);
        let garp = &self.settings.garp;
        if garp.repeat > 0 {
            out.push(Action::ScheduleGarp { after: Duration::ZERO, count: garp.repeat });
            if !garp.delay.is_zero() {
                out.push(Action::ScheduleGarp { after: garp.delay, count: garp.repeat });
            }
        }
        out.push(Action::Notify { state: State::Master });
    }

    /// Enters BACKUP with a fresh Master_Down_Timer (set Master_Adver_Interval first).
    fn enter_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::StopSending);
        }
        self.state = State::Backup;
        self.resuming = false;
        self.advert_at = None;
        self.master_down_at = Some(now + self.master_down_interval());
        out.push(Action::BecomeBackup);
        out.push(Action::Notify { state: State::Backup });
    }

    fn enter_fault(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Master {
            // keepalived hands over at once rather than letting the backup wait Master_Down.
            out.push(Action::SendAdvertPriorityZero);
            out.push(Action::StopSending);
        }
        self.state = State::Fault;
        self.resuming = false;
        self.master_down_at = None;
        self.advert_at = None;
        self.master = None;
        out.push(Action::BecomeFault);
        out.push(Action::Notify { state: State::Fault });
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Initialize | State::Stop => return,
            State::Master => {
                out.push(Action::SendAdvertPriorityZero);
                out.push(Action::StopSending);
            }
            State::Backup | State::Fault => {}
        }
        self.state = State::Stop;
        self.resuming = false;
        self.master_down_at = None;
        self.advert_at = None;
        self.preempt_after = None;
        self.master = None;
        out.push(Action::BecomeStopped);
        out.push(Action::Notify { state: State::Stop });
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Backup if self.master_down_at.is_some_and(|t| t <= now) => {
                self.enter_master(now, out);
            }
            State::Master if self.advert_at.is_some_and(|t| t <= now) => {
                // A resumed master heard nobody: it is the master, as before the restart.
                self.resuming = false;
                out.push(Action::SendAdvert { priority: self.effective_priority() });
                self.advert_at = Some(now + centis(self.settings.advert_interval_cs));
            }
            // Early or stale timer: nothing is due.
            _ => {}
        }
    }

    fn advert_received(&mut self, seen: MasterInfo, now: Instant, out: &mut Vec<Action>) {
        if seen.address == self.settings.primary_address {
            // Never acted on, in any state, but counted: a forgery with our source shows.
            out.push(Action::AdvertIgnored { reason: IgnoreReason::OwnAddress });
            return;
        }
        let reason = match self.state {
            State::Initialize | State::Stop => Some(IgnoreReason::NotRunning),
            State::Fault => Some(IgnoreReason::Fault),
            State::Backup | State::Master => {
                let s = &self.settings;
                if Family::of(seen.address) != s.family {
                    Some(IgnoreReason::WrongFamily)
                } else if !s.unicast_peers.is_empty() && !s.unicast_peers.contains(&seen.address) {
                    Some(IgnoreReason::NotAPeer)
                } else {
                    None
                }
            }
        };
        if let Some(reason) = reason {
            out.push(Action::AdvertIgnored { reason });
            return;
        }
        if self.state == State::Backup {
            self.backup_received(seen, now, out);
        } else {
            self.master_received(seen, now, out);
        }
    }

    /// RFC 5798 6.4.2 "If an ADVERTISEMENT is received", plus keepalived's preempt_delay.
    fn backup_received(&mut self, seen: MasterInfo, now: Instant, out: &mut Vec<Action>) {
        let ours = self.effective_priority();
        if seen.priority == 0 {
            // The master is leaving: take over after Skew_Time, highest priority first.
            self.master = None;
            self.master_down_at = Some(now + self.skew_time());
            return;
        }
        let delay = self.settings.preempt_delay;
        let delaying = !delay.is_zero() && self.preempt_after.is_none_or(|t| t > now);
        if !self.settings.preempt || seen.priority >= ours || delaying {
            self.learn_interval(seen.advert_interval_cs);
            self.master_down_at = Some(now + self.master_down_interval());
            if !delay.is_zero() {
                if seen.priority >= ours {
                    // A higher master: the delay starts afresh when a lower one shows up.
                    self.preempt_after = None;
                } else if self.preempt_after.is_none() {
                    self.preempt_after = Some(now + delay);
                }
            }
            self.master = Some(seen);
        } else {
            // Preempting: let Master_Down_Timer run out (keepalived logs "discarding").
            out.push(Action::AdvertIgnored { reason: IgnoreReason::LowerPriority });
        }
    }

    /// RFC 5798 6.4.3 "If an ADVERTISEMENT is received", plus keepalived's answer to
    /// lower-priority adverts.
    fn master_received(&mut self, seen: MasterInfo, now: Instant, out: &mut Vec<Action>) {
        if self.resuming && seen.priority != 0 {
            // Another router became master while we were away: we are a fresh start after all.
            self.enter_backup(now, out);
            self.backup_received(seen, now, out);
            return;
        }
        self.resuming = false;
        let ours = self.effective_priority();
        if seen.priority == 0 {
            // Another master is leaving: assert ourselves at once so backups do not take over.
            if self.may_answer(now) {
                out.push(Action::SendAdvert { priority: ours });
                self.advert_at = Some(now + centis(self.settings.advert_interval_cs));
            }
            return;
        }
        let wins = seen.priority > ours
            || (seen.priority == ours
                && address_greater(seen.address, self.settings.primary_address));
        if wins {
            self.learn_interval(seen.advert_interval_cs);
            self.enter_backup(now, out);
            self.master = Some(seen);
        } else {
            out.push(Action::AdvertIgnored { reason: IgnoreReason::LowerPriority });
            if !self.settings.lower_prio_no_advert && self.may_answer(now) {
                out.push(Action::SendAdvert { priority: ours });
            }
        }
    }

    /// Whether a master may answer an advert now: once per Advertisement_Interval. One answer
    /// ends a split brain (the other master hears a higher priority); more only echo a flood.
    fn may_answer(&mut self, now: Instant) -> bool {
        let every = centis(self.settings.advert_interval_cs);
        if self.answered_at.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return false;
        }
        self.answered_at = Some(now);
        true
    }

    /// VRRPv3 backups adopt the master's interval (RFC 5798 6.4.2); v2 intervals must match.
    fn learn_interval(&mut self, cs: u16) {
        if self.settings.version == Version::V3 && cs != 0 {
            self.master_adver_interval_cs = cs.min(MAX_V3_INTERVAL_CS);
        }
    }

    fn track_changed(&mut self, fault: bool, delta: i32, now: Instant, out: &mut Vec<Action>) {
        let old_down = self.master_down_interval();
        self.track_fault = fault;
        self.priority_delta = delta;
        if !self.state.running() {
            return;
        }
        if self.faulty() {
            if self.state != State::Fault {
                self.enter_fault(out);
            }
            return;
        }
        if self.state == State::Fault {
            self.start_running(now, out);
            return;
        }
        // A new priority changes Skew_Time: move the running down timer by the difference, as
        // keepalived does, so a backup that now outranks the master takes over on time.
        let new_down = self.master_down_interval();
        if self.state == State::Backup
            && let Some(at) = self.master_down_at
        {
            self.master_down_at = Some(if new_down >= old_down {
                at + (new_down - old_down)
            } else {
                at.checked_sub(old_down - new_down).unwrap_or(at)
            });
        }
    }

    /// Members of a sync group move together: FAULT and BACKUP force the others, and so does
    /// MASTER (keepalived syncs all three).
    fn sync_group(&mut self, peer_state: State, now: Instant, out: &mut Vec<Action>) {
        match peer_state {
            State::Fault => {
                self.sync_fault = true;
                if self.state.running() && self.state != State::Fault {
                    self.enter_fault(out);
                }
            }
            State::Backup => {
                self.sync_fault = false;
                match self.state {
                    State::Master => self.enter_backup(now, out),
                    State::Fault if !self.track_fault => self.start_running(now, out),
                    _ => {}
                }
            }
            State::Master => {
                self.sync_fault = false;
                match self.state {
                    State::Backup => self.enter_master(now, out),
                    State::Fault if !self.track_fault => {
                        self.master_adver_interval_cs = self.settings.advert_interval_cs;
                        self.preempt_after = None;
                        self.enter_master(now, out);
                    }
                    _ => {}
                }
            }
            // A peer that is not started or stopped says nothing about the group's health.
            State::Initialize | State::Stop => {}
        }
    }
}

#[cfg(test)]
mod tests;
