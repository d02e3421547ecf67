//! Sync groups: one task per `vrrp_sync_group` moves its members together.

use super::*;

/// A member's state or own-fault change, to its sync group's task.
#[derive(Debug)]
pub(super) struct MemberChange {
    pub(super) pos: usize,
    pub(super) state: State,
    /// Its own tracked objects keep it in FAULT (not a sync-group peer).
    pub(super) own_fault: bool,
    /// Caused by a sync-group command: not forwarded (the group already knows).
    pub(super) from_sync: bool,
}

/// A sync group (keepalived's `vrrp_sync_group`): its members move together.
///
/// - A member whose own tracking fails takes the others to FAULT with it; they stay there until
///   no member is faulty on its own account any more.
/// - A member's own change to MASTER or BACKUP is passed on to the others (a backup taking over
///   takes its peers along; a master losing to a higher priority releases theirs), unless a peer
///   is faulty on its own account: then the member is sent back to FAULT instead.
/// - Changes caused by the group itself are not passed on again, so nothing echoes.
///
/// The group's notify scripts run when all members have reached the same new state.
pub(super) async fn run_group(
    group: VrrpSyncGroup,
    members: Vec<mpsc::UnboundedSender<Cmd>>,
    mut rx: mpsc::UnboundedReceiver<MemberChange>,
    notify_timeout: Duration,
) {
    let notifier = Notifier::spawn(notify_timeout);
    // (state, own fault) per member.
    let mut states = vec![(State::Initialize, false); members.len()];
    let mut group_state = State::Initialize;
    while let Some(ch) = rx.recv().await {
        let Some(&prev) = states.get(ch.pos) else { continue };
        states[ch.pos] = (ch.state, ch.own_fault);
        let mut told = vec![false; members.len()];
        let tell = |i: usize, state: State, told: &mut Vec<bool>| {
            told[i] = true;
            let _ = members[i].send(Cmd::SyncGroup(state));
        };
        let others = (0..members.len()).filter(|&i| i != ch.pos);
        let any_own = states.iter().any(|&(_, own)| own);
        if ch.own_fault && !prev.1 {
            others.for_each(|i| tell(i, State::Fault, &mut told));
        } else if !ch.from_sync
            && ch.state != prev.0
            && matches!(ch.state, State::Master | State::Backup)
        {
            if any_own {
                tell(ch.pos, State::Fault, &mut told);
            } else {
                others.for_each(|i| tell(i, ch.state, &mut told));
            }
        }
        if prev.1 && !ch.own_fault && !any_own {
            // The last own fault cleared: release whoever the group still holds in FAULT.
            for i in 0..members.len() {
                if states[i].0 == State::Fault && !told[i] {
                    tell(i, State::Backup, &mut told);
                }
            }
        }
        let first = states[0].0;
        if states.iter().all(|&(s, _)| s == first) && first != group_state {
            group_state = first;
            tracing::info!(group = %group.name, "vrrp_sync_group {} is {first}", group.name);
            let script = notify::specific(
                first,
                group.notify_master.as_deref(),
                group.notify_backup.as_deref(),
                group.notify_fault.as_deref(),
                None,
            );
            if let Some(s) = script {
                notifier.run(
                    notify::command_line(s, &[]),
                    format!("vrrp_sync_group {} {first}", group.name),
                );
            }
        }
    }
    notifier.finish(notify_timeout).await;
}
