//! [`Liveness`]: is the direct path to one neighbour still carrying our messages?
//! WireGuard's rule ("data sent, nothing back within KEEPALIVE + REKEY_TIMEOUT: the
//! path is suspect"), made quicker by asking: one-sided traffic is probed, and a path
//! whose probes go unanswered is declared down so that routing takes a relay.
//!
//! Sans-IO and deterministic like the rest of the mesh core: times are `u64`
//! milliseconds passed in by the caller, no clock reads, no I/O. The caller feeds it:
//!
//! - [`Liveness::on_received`] for every authenticated message from the neighbour
//!   (data, control, keepalive, handshake): the path works, all suspicion ends;
//! - [`Liveness::on_sample`] with a counter of data messages sent to the neighbour on
//!   the direct path, sampled on a timer (no call per packet; keepalives and control
//!   messages must not be counted, so that an idle neighbour is never probed);
//! - [`Liveness::doubt`] when the neighbour says it has no link to us (its link state
//!   no longer lists us): probe at once;
//!
//! and polls [`Liveness::poll`]: [`Action::Probe`] (send the neighbour a probe, which
//! it answers) or [`Action::Down`] (declare the direct link down). Idle neighbours are
//! left to the caller's silence timeout: this detector only acts on traffic we sent.

/// Timings of a [`Liveness`] (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Data sent and nothing received for this long: start probing.
    pub probe_after_ms: u64,
    /// Probe again this often while no answer comes.
    pub probe_every_ms: u64,
    /// Data sent and nothing received for this long (probes included): the direct
    /// path is down. Must exceed `probe_after_ms`.
    pub down_after_ms: u64,
}

impl Default for LivenessConfig {
    fn default() -> LivenessConfig {
        LivenessConfig { probe_after_ms: 2_000, probe_every_ms: 1_000, down_after_ms: 5_000 }
    }
}

/// What the caller must do now (see [`Liveness::poll`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the neighbour a probe on the direct path.
    Probe,
    /// Declare the direct link down (routes move to relays). The detector disarms until
    /// new data is sent.
    Down,
}

/// How the direct path looks (for `vswitchctl mesh peers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathState {
    /// Answers come back (or nothing was sent that wants one).
    Alive,
    /// Data sent at `since` got no answer within `probe_after_ms` (or the neighbour
    /// said it has no link to us at `since`): probing.
    Suspect {
        /// When the first unanswered data was seen, or the doubt came (ms).
        since: u64,
    },
}

/// The timers of an armed detector (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Armed {
    /// First unanswered data seen (or doubt) at.
    since: u64,
    /// Probing starts (the path counts as suspect from) at.
    suspect_at: u64,
    /// The next probe is due at.
    probe_at: u64,
    /// Declared down at, unless something arrives before.
    down_at: u64,
}

/// One neighbour's direct-path detector. Owns a few numbers; no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Liveness {
    cfg: LivenessConfig,
    /// The data counter at the last sample.
    sent: u64,
    /// When the last sample was taken.
    sampled_at: Option<u64>,
    /// When the last message from the neighbour arrived.
    last_rx: Option<u64>,
    /// Unanswered: the first sample that saw data sent with nothing received since the
    /// sample before it (or a doubt), while no answer has come since.
    armed: Option<Armed>,
}

impl Liveness {
    /// A detector whose data counter stands at `sent` now.
    pub fn new(cfg: LivenessConfig, sent: u64) -> Liveness {
        Liveness { cfg, sent, sampled_at: None, last_rx: None, armed: None }
    }

    /// The timings.
    pub fn config(&self) -> &LivenessConfig {
        &self.cfg
    }

    /// An authenticated message from the neighbour arrived at `now`.
    pub fn on_received(&mut self, now: u64) {
        self.last_rx = Some(self.last_rx.map_or(now, |t| t.max(now)));
        self.armed = None;
    }

    /// The data counter stands at `sent` at `now`. Data sent since the last sample with
    /// nothing received since then is one-sided traffic: the detector arms (a message
    /// received in the same interval may have come before or after the data; it is given
    /// the benefit of the doubt, and the next interval decides).
    pub fn on_sample(&mut self, sent: u64, now: u64) {
        let prev = self.sampled_at.replace(now);
        if sent == self.sent {
            return;
        }
        self.sent = sent;
        let answered_since_prev = match (self.last_rx, prev) {
            (Some(rx), Some(p)) => rx > p,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if self.armed.is_none() && !answered_since_prev {
            let c = &self.cfg;
            let at = now.saturating_add(c.probe_after_ms);
            self.armed =
                Some(Armed { since: now, suspect_at: at, probe_at: at, down_at: now.saturating_add(c.down_after_ms) });
        }
    }

    /// The neighbour says it has no direct link to us (while we think there is one):
    /// probe now, and declare the path down if nothing answers within
    /// `down_after_ms - probe_after_ms`. Never postpones a verdict under way.
    pub fn doubt(&mut self, now: u64) {
        let c = &self.cfg;
        let down_at = now.saturating_add(c.down_after_ms.saturating_sub(c.probe_after_ms));
        let a = self.armed.get_or_insert(Armed { since: now, suspect_at: now, probe_at: now, down_at });
        a.suspect_at = a.suspect_at.min(now);
        a.probe_at = a.probe_at.min(now);
        a.down_at = a.down_at.min(down_at);
    }

    /// Forgets any suspicion and takes `sent` as the counter (call while the direct link
    /// is down or not up yet: nothing to detect, nothing to carry over).
    pub fn reset(&mut self, sent: u64, now: u64) {
        self.sent = sent;
        self.sampled_at = Some(now);
        self.armed = None;
    }

    /// What to do at `now`: at most one action per call.
    pub fn poll(&mut self, now: u64) -> Option<Action> {
        let a = self.armed.as_mut()?;
        if now >= a.down_at {
            self.armed = None;
            return Some(Action::Down);
        }
        if now >= a.probe_at {
            a.probe_at = now.saturating_add(self.cfg.probe_every_ms);
            return Some(Action::Probe);
        }
        None
    }

    /// The next instant [`Liveness::poll`] has something to do, if armed.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.armed.map(|a| a.probe_at.min(a.down_at))
    }

    /// How the path looks at `now`.
    pub fn state(&self, now: u64) -> PathState {
        match self.armed {
            Some(a) if now >= a.suspect_at => PathState::Suspect { since: a.since },
            _ => PathState::Alive,
        }
    }
}
