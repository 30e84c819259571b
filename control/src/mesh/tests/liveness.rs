//! The direct-path detector, driven with explicit timestamps the way the agent drives
//! it: a counter sample and a poll every 50 ms, messages received in between.

use super::super::liveness::{Action, Liveness, LivenessConfig, PathState};

const TICK: u64 = 50;

/// Runs `lv` from `from` to `to` (ms, exclusive) in agent ticks. `sends(t)`: data sent
/// in the tick ending at `t`; `receives(t)`: a message arrives at `t - 1` (inside the
/// tick). Every probe is answered `answer_ms` later when given. Returns the actions
/// with their times.
fn drive(
    lv: &mut Liveness,
    sent: &mut u64,
    from: u64,
    to: u64,
    sends: impl Fn(u64) -> bool,
    receives: impl Fn(u64) -> bool,
    answer_ms: Option<u64>,
) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    let mut answer_at: Option<u64> = None;
    let mut t = from;
    while t < to {
        if receives(t) || answer_at.is_some_and(|a| a <= t) {
            lv.on_received(t - 1);
            answer_at = None;
        }
        if sends(t) {
            *sent += 1;
        }
        lv.on_sample(*sent, t);
        if let Some(a) = lv.poll(t) {
            out.push((t, a));
            if a == Action::Probe {
                answer_at = answer_ms.map(|d| t + d);
            }
        }
        t += TICK;
    }
    out
}

fn fresh() -> (Liveness, u64) {
    (Liveness::new(LivenessConfig::default(), 0), 0)
}

#[test]
fn an_idle_peer_is_never_probed() {
    // Nothing sent for ten minutes (its keepalives and ours are not data).
    let (mut lv, mut sent) = fresh();
    let acts = drive(&mut lv, &mut sent, 1000, 600_000, |_| false, |_| false, None);
    assert_eq!(acts, vec![]);
    assert_eq!(lv.state(600_000), PathState::Alive);
    assert_eq!(lv.poll_timeout(), None);
}

#[test]
fn answered_traffic_is_never_probed() {
    // A ping every 200 ms, its reply 1 ms later (same tick).
    let (mut lv, mut sent) = fresh();
    let acts = drive(&mut lv, &mut sent, 1000, 120_000, |t| t % 200 == 0, |t| t % 200 == 0, None);
    assert_eq!(acts, vec![]);
    // A bulk stream with acknowledgements in every tick.
    let acts = drive(&mut lv, &mut sent, 120_000, 240_000, |_| true, |_| true, None);
    assert_eq!(acts, vec![]);
}

#[test]
fn one_sided_traffic_is_probed_then_declared_down() {
    let (mut lv, mut sent) = fresh();
    // Answered until 10 s, then the path breaks: data keeps going, nothing comes back.
    let acts = drive(&mut lv, &mut sent, 1000, 10_000, |_| true, |_| true, None);
    assert_eq!(acts, vec![]);
    let acts = drive(&mut lv, &mut sent, 10_000, 15_050, |_| true, |_| false, None);
    // Armed at the first tick without an answer (10 000): probes at +2, +3, +4 s, down
    // at +5 s.
    assert_eq!(
        acts,
        vec![(12_000, Action::Probe), (13_000, Action::Probe), (14_000, Action::Probe), (15_000, Action::Down)]
    );
    assert_eq!(lv.state(15_000), PathState::Alive, "disarmed once down");
    // The caller resets it while the link is down: relayed data does not count here,
    // nor do the counter's moves meanwhile.
    for t in (15_050..40_000).step_by(TICK as usize) {
        sent += 3;
        lv.reset(sent, t);
        assert_eq!(lv.poll(t), None);
    }
    // The link is back (a message came): used again, and watched again.
    lv.on_received(40_000);
    let acts = drive(&mut lv, &mut sent, 40_050, 60_000, |_| true, |t| t % 1000 == 0, None);
    assert_eq!(acts, vec![]);
}

#[test]
fn answered_probes_keep_the_path_up() {
    // One-way data (nothing to answer it with), the peer's keepalives every 10 s: the
    // probes are what it answers, 5 ms later.
    let (mut lv, mut sent) = fresh();
    let acts = drive(&mut lv, &mut sent, 1000, 61_000, |_| true, |t| t % 10_000 == 0, Some(5));
    assert!(acts.iter().all(|(_, a)| *a == Action::Probe), "{acts:?}");
    // About one probe per 2 s of one-sided traffic, never two in a row unanswered.
    assert!(acts.len() >= 20 && acts.len() <= 31, "{} probes", acts.len());
    assert!(acts.windows(2).all(|w| w[1].0 - w[0].0 >= 2000), "{acts:?}");
}

#[test]
fn other_sides_messages_keep_it_unarmed() {
    // One-way data, but its keepalives (or anything) arrive every 1.5 s: never probed.
    let (mut lv, mut sent) = fresh();
    let acts = drive(&mut lv, &mut sent, 1000, 60_000, |_| true, |t| t % 1500 == 0, None);
    assert_eq!(acts, vec![]);
}

#[test]
fn a_message_in_the_same_tick_as_the_data_gets_the_benefit_of_the_doubt() {
    let cfg = LivenessConfig::default();
    let mut lv = Liveness::new(cfg, 0);
    lv.on_sample(0, 0);
    lv.on_received(20);
    lv.on_sample(1, 50);
    assert_eq!(lv.poll_timeout(), None, "received after the previous sample: not armed");
    // The next tick with data and nothing received decides.
    lv.on_sample(2, 100);
    assert_eq!(lv.poll_timeout(), Some(100 + cfg.probe_after_ms));
    // A counter that moved backwards (a session's counters retired differently) is a
    // change too: only equality means "nothing sent".
    let mut lv = Liveness::new(cfg, 10);
    lv.on_sample(10, 0);
    lv.on_sample(4, 50);
    assert_eq!(lv.poll_timeout(), Some(50 + cfg.probe_after_ms));
}

#[test]
fn first_sample_after_a_message_is_not_one_sided() {
    let mut lv = Liveness::new(LivenessConfig::default(), 0);
    lv.on_received(5);
    lv.on_sample(1, 50);
    assert_eq!(lv.poll_timeout(), None);
    let mut lv = Liveness::new(LivenessConfig::default(), 0);
    lv.on_sample(1, 50);
    assert_eq!(lv.poll_timeout(), Some(2050), "never heard from, data sent: armed");
}

#[test]
fn doubt_probes_at_once_and_gives_the_rest_of_the_time() {
    let cfg = LivenessConfig::default();
    // Idle, until the peer's link state stops listing us at 30 s.
    let (mut lv, mut sent) = fresh();
    assert_eq!(drive(&mut lv, &mut sent, 1000, 30_000, |_| false, |_| false, None), vec![]);
    lv.doubt(30_000);
    assert_eq!(lv.state(30_000), PathState::Suspect { since: 30_000 });
    assert_eq!(lv.poll_timeout(), Some(30_000));
    let acts = drive(&mut lv, &mut sent, 30_000, 40_000, |_| false, |_| false, None);
    let down = 30_000 + cfg.down_after_ms - cfg.probe_after_ms;
    assert_eq!(
        acts,
        vec![(30_000, Action::Probe), (31_000, Action::Probe), (32_000, Action::Probe), (down, Action::Down)]
    );
    // Answered: nothing more.
    let (mut lv, mut sent) = fresh();
    lv.doubt(30_000);
    let acts = drive(&mut lv, &mut sent, 30_000, 40_000, |_| false, |_| false, Some(3));
    assert_eq!(acts, vec![(30_000, Action::Probe)]);
    assert_eq!(lv.state(40_000), PathState::Alive);
    // Doubt never postpones a verdict already under way.
    let mut lv = Liveness::new(cfg, 0);
    lv.on_sample(1, 10_000);
    lv.doubt(14_000);
    assert_eq!(lv.poll_timeout(), Some(12_000));
    // Doubt right after start (no underflow).
    let mut lv = Liveness::new(cfg, 0);
    lv.doubt(100);
    assert_eq!(lv.poll(100), Some(Action::Probe));
}

#[test]
fn poll_timeout_is_when_poll_acts() {
    let cfg = LivenessConfig { probe_after_ms: 700, probe_every_ms: 300, down_after_ms: 1600 };
    let mut lv = Liveness::new(cfg, 0);
    lv.on_sample(0, 0);
    lv.on_sample(1, 100);
    let mut acts = Vec::new();
    while let Some(t) = lv.poll_timeout() {
        assert_eq!(lv.poll(t - 1), None, "nothing before {t}");
        acts.push((t, lv.poll(t).unwrap()));
    }
    assert_eq!(acts, vec![(800, Action::Probe), (1100, Action::Probe), (1400, Action::Probe), (1700, Action::Down)]);
}
