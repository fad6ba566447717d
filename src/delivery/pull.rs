//! The multiplexed pull engine: one task and one inbox subscription pull for every
//! subscription this process delivers, however many there are. A subscription is a small
//! [`Slot`] (its target, its in-flight count and its outstanding pull requests); an idle one
//! costs one waiting pull request on the server, renewed every `pull_expires_secs` (120 s), and nothing
//! else in Herald: no task, no stream, no timer of its own.
//!
//! Credits: a slot never has more messages in flight plus requested than its window (
//! `delivery_max_in_flight`, 1 when ordered). It asks for the free part of the window when at
//! least half of it is free, so a busy subscription sends one request per half window, not
//! one per message. The consumer's `max_ack_pending` bounds the same window on the server, so
//! a request that was given up locally but still delivers cannot overfill it. Each slot has
//! its own window: a busy subscription never takes another's share.
//!
//! Requests end with a status (expired, leadership change, consumer deleted, no
//! responders). A request lost without one (a server restart, a reconnect, a new consumer
//! leader) is asked again when the connection count changes, on the consumer's
//! leader-elected advisory, or [`LOST_AFTER`] past its expiry at the latest; a subscription
//! that received messages recently asks with a short expiry ([`BUSY_EXPIRES`]), so that
//! latest is seconds, not minutes, where a stall would be seen.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::Arc,
    time::Duration,
};

use async_nats::{jetstream::AckKind, StatusCode};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    message::attributes_of,
    worker::{deliver_one, settle_filtered, Target},
    Deps,
};
use crate::store::{
    leases::{Lease, LEASE_TTL},
    pull::{next_subject, PullInbox, Pulled},
};

/// A request neither answered nor ended this long after its expiry is taken as lost.
const LOST_AFTER: Duration = Duration::from_secs(5);
/// The expiry of the requests of a subscription that received a message within the last
/// [`BUSY_WINDOW`]: a request lost in a fault (a consumer leader killed without an advisory
/// reaching us) then stalls a busy subscription for this plus [`LOST_AFTER`], not for
/// `pull_expires_secs`. The others keep the long expiry (idle CPU).
const BUSY_EXPIRES: Duration = Duration::from_secs(10);
const BUSY_WINDOW: Duration = Duration::from_secs(30);
/// How often lost requests and expired subscriptions are looked for.
const SWEEP: Duration = Duration::from_secs(1);
/// How long a message pulled for a subscription this process no longer delivers waits
/// before JetStream offers it again.
const ORPHAN_NAK_DELAY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A subscription's consumer: `(stream, consumer)`.
pub type Key = (String, String);

enum Command {
    /// Deliver `key` with `target` (a new subscription, or a changed one: messages already
    /// in flight finish with the old target, new ones use this).
    Upsert {
        key: Key,
        target: Arc<Target>,
    },
    Remove {
        key: Key,
    },
    /// The consumer has a new leader: requests waiting at the old one are gone.
    Repull {
        key: Key,
    },
    /// This process got or lost the delivery lease of `consumer`.
    Lease {
        consumer: String,
        held: bool,
    },
}

/// How the discovery side tells the engine what to pull.
#[derive(Clone)]
pub struct PullHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl PullHandle {
    pub fn upsert(&self, key: Key, target: Arc<Target>) {
        let _ = self.commands.send(Command::Upsert { key, target });
    }

    pub fn remove(&self, key: Key) {
        let _ = self.commands.send(Command::Remove { key });
    }

    pub fn repull(&self, key: Key) {
        let _ = self.commands.send(Command::Repull { key });
    }
}

struct Request {
    id: u64,
    /// Messages of this request not yet received.
    remaining: usize,
    /// When it is taken as lost.
    lost_at: Instant,
}

/// One subscription's pull state.
struct Slot {
    key: Key,
    next_subject: String,
    target: Arc<Target>,
    window: Window,
    next_request: u64,
    backoff: Duration,
    /// When the last message arrived (see [`BUSY_EXPIRES`]).
    last_message: Option<Instant>,
    /// The task keeping this subscription's delivery lease (rate-limited ones only); it
    /// stops and releases the lease when the slot goes.
    lease_keeper: Option<tokio_util::sync::DropGuard>,
}

/// A subscription's delivery window: what is in flight, what is asked for, and when the
/// next request may go.
struct Window {
    size: usize,
    in_flight: usize,
    requests: Vec<Request>,
    /// After a refused request: no new request before this.
    retry_at: Option<Instant>,
    /// `options.max_rate`: the subscription's token bucket.
    rate: Option<TokenBucket>,
    /// Whether this process holds the subscription's delivery lease (only a rate-limited
    /// subscription needs one).
    leased: bool,
    /// A wake-up is scheduled for the next token.
    wake_at: Option<Instant>,
}

/// `max_rate` deliveries per second, with a burst of at most one second's worth (and at
/// least one message): over any interval `t` a subscription gets at most
/// `max(1, rate) + rate × t` messages.
#[derive(Debug, Clone)]
struct TokenBucket {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_sec: f64, now: Instant) -> Self {
        Self {
            per_sec,
            tokens: 1.0,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec.max(1.0));
        self.at = now;
    }

    /// When the next whole token is there.
    fn next_token(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_sec).clamp(0.0, 3600.0))
    }
}

impl Window {
    fn new(size: usize) -> Self {
        Self {
            size,
            in_flight: 0,
            requests: Vec::new(),
            retry_at: None,
            rate: None,
            leased: false,
            wake_at: None,
        }
    }

    /// Sets or clears the rate limit, keeping the tokens of an unchanged one.
    fn set_rate(&mut self, per_sec: Option<f64>, now: Instant) {
        self.rate = match (self.rate.take(), per_sec) {
            (Some(mut b), Some(r)) => {
                b.per_sec = r;
                Some(b)
            }
            (None, Some(r)) => Some(TokenBucket::new(r, now)),
            (_, None) => None,
        };
    }

    /// Takes `n` tokens for a request just sent.
    fn spend(&mut self, n: usize) {
        if let Some(b) = &mut self.rate {
            b.tokens -= n as f64;
        }
    }

    fn requested(&self) -> usize {
        self.requests.iter().map(|r| r.remaining).sum()
    }

    /// How many messages to ask for now; 0 when no request is due.
    fn due(&mut self, now: Instant) -> usize {
        if self.retry_at.is_some_and(|t| t > now) {
            return 0;
        }
        let free = self.size.saturating_sub(self.in_flight + self.requested());
        if let Some(bucket) = &mut self.rate {
            // One request at a time, never more than the whole tokens: what a request
            // brings is at most what the bucket allowed when it was sent.
            if !self.leased || !self.requests.is_empty() {
                return 0;
            }
            bucket.refill(now);
            return free.min(bucket.tokens.max(0.0) as usize);
        }
        if free == 0 || (!self.requests.is_empty() && free < self.size.div_ceil(2)) {
            return 0;
        }
        free
    }

    /// When a rate-limited window that has room but no token should look again.
    fn wake_for_token(&mut self, now: Instant) -> Option<Instant> {
        let bucket = self.rate.as_ref()?;
        if !self.leased
            || !self.requests.is_empty()
            || self.in_flight >= self.size
            || self.wake_at.is_some_and(|w| w > now)
        {
            return None;
        }
        let at = now + bucket.next_token();
        self.wake_at = Some(at);
        Some(at)
    }

    fn end_request(&mut self, id: u64) {
        self.requests.retain(|r| r.id != id);
    }
}

/// Starts the engine's task; it runs until `shutdown`, then hands back what it received
/// but did not start, and returns. Deliveries run on `tracker`.
pub async fn start(
    deps: Arc<Deps>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<(PullHandle, tokio::task::JoinHandle<()>)> {
    let inbox = deps
        .store
        .pull_inbox()
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe the pull inbox: {e}"))?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (done, done_rx) = mpsc::unbounded_channel();
    let engine = Puller {
        expires: Duration::from_secs(deps.config.pull_expires_secs),
        commands: commands.clone(),
        holder: Arc::from(uuid::Uuid::new_v4().to_string()),
        connects: deps.store.connects(),
        deps,
        inbox,
        slots: HashMap::new(),
        by_consumer: HashMap::new(),
        next_slot: 1,
        retries: BinaryHeap::new(),
        done,
        tracker,
    };
    let task = tokio::spawn(engine.run(command_rx, done_rx, shutdown));
    Ok((PullHandle { commands }, task))
}

struct Puller {
    deps: Arc<Deps>,
    /// How long a pull request waits on the server (`pull_expires_secs`).
    expires: Duration,
    inbox: PullInbox,
    slots: HashMap<u64, Slot>,
    /// Consumer name → slot. Consumer names are subscription ids (UUIDs), unique across
    /// topics; a message's ack subject names its consumer.
    by_consumer: HashMap<String, u64>,
    next_slot: u64,
    /// Slots waiting out a backoff, earliest first.
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Finished deliveries report their slot here.
    done: mpsc::UnboundedSender<u64>,
    /// For the lease keepers' reports.
    commands: mpsc::UnboundedSender<Command>,
    /// This process, as a lease holder.
    holder: Arc<str>,
    tracker: TaskTracker,
    /// The connection count the outstanding requests were sent under.
    connects: u64,
}

impl Puller {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut done: mpsc::UnboundedReceiver<u64>,
        shutdown: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_retry = self.retries.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(command) = commands.recv() => self.command(command).await,
                Some(slot) = done.recv() => {
                    if let Some(s) = self.slots.get_mut(&slot) {
                        s.window.in_flight = s.window.in_flight.saturating_sub(1);
                        self.pull(slot).await;
                    }
                }
                pulled = self.inbox.next() => match pulled {
                    Some(p) => self.pulled(p).await,
                    None => break,
                },
                _ = sleep_until(next_retry) => self.retry_due().await,
                _ = sweep.tick() => self.sweep().await,
            }
        }
        // Messages already received but not started go back at once; the rest of the
        // window ends with the inbox.
        while let Some(p) = self.inbox.try_next() {
            if let Pulled::Message(message) = p {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
        self.inbox.close().await;
        tracing::debug!("pull engine stopped");
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Upsert { key, target } => {
                let window = target.in_flight(self.deps.config.delivery_max_in_flight);
                let rate = max_rate(&target);
                let id = match self.by_consumer.get(&key.1) {
                    Some(&id) => id,
                    None => {
                        let id = self.next_slot;
                        self.next_slot += 1;
                        self.by_consumer.insert(key.1.clone(), id);
                        self.slots.insert(
                            id,
                            Slot {
                                next_subject: next_subject(&key.0, &key.1),
                                key,
                                target: target.clone(),
                                window: Window::new(window),
                                next_request: 1,
                                backoff: BACKOFF_MIN,
                                last_message: None,
                                lease_keeper: None,
                            },
                        );
                        id
                    }
                };
                let keeper = self
                    .slots
                    .get(&id)
                    .is_some_and(|s| rate.is_some() && s.lease_keeper.is_none());
                let keeper = keeper.then(|| self.keep_lease(id));
                if let Some(s) = self.slots.get_mut(&id) {
                    s.target = target;
                    s.window.size = window;
                    s.window.set_rate(rate, Instant::now());
                    if rate.is_none() {
                        s.lease_keeper = None;
                        s.window.leased = false;
                    } else if let Some(k) = keeper {
                        s.lease_keeper = Some(k);
                    }
                }
                self.pull(id).await;
            }
            Command::Lease { consumer, held } => {
                if let Some(&id) = self.by_consumer.get(&consumer) {
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.window.leased = held;
                    }
                    self.pull(id).await;
                }
            }
            Command::Remove { key } => {
                if let Some(id) = self.by_consumer.remove(&key.1) {
                    self.slots.remove(&id);
                }
            }
            Command::Repull { key } => {
                if let Some(&id) = self.by_consumer.get(&key.1) {
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.window.requests.clear();
                        s.window.retry_at = None;
                    }
                    self.pull(id).await;
                }
            }
        }
    }

    /// Sends the slot's next pull request if one is due.
    async fn pull(&mut self, id: u64) {
        let now = Instant::now();
        let Some(s) = self.slots.get_mut(&id) else {
            return;
        };
        let batch = s.window.due(now);
        if batch == 0 {
            if let Some(at) = s.window.wake_for_token(now) {
                self.retries.push(Reverse((at, id)));
            }
            return;
        }
        s.window.spend(batch);
        let request = s.next_request;
        s.next_request += 1;
        let busy = s
            .last_message
            .is_some_and(|at| now.duration_since(at) < BUSY_WINDOW);
        let expires = if busy {
            self.expires.min(BUSY_EXPIRES)
        } else {
            self.expires
        };
        s.window.requests.push(Request {
            id: request,
            remaining: batch,
            lost_at: now + expires + LOST_AFTER,
        });
        tracing::trace!(slot = id, request, batch, "pull request");
        let sent = self
            .deps
            .store
            .request_pull(&self.inbox, &s.next_subject, id, request, batch, expires)
            .await;
        if !sent {
            s.window.end_request(request);
            self.back_off(id, now);
        }
    }

    async fn pulled(&mut self, pulled: Pulled) {
        match pulled {
            Pulled::Message(message) => {
                let slot = message
                    .info()
                    .ok()
                    .and_then(|info| self.by_consumer.get(info.consumer).copied());
                let Some((slot, s)) = slot.and_then(|id| Some((id, self.slots.get_mut(&id)?)))
                else {
                    // The subscription was removed (deleted, disabled) while a request of it
                    // was still waiting on the server. Handed back with a delay, so a request
                    // that outlives its subscription here cannot spin on the same messages.
                    let _ = message.ack_with(AckKind::Nak(Some(ORPHAN_NAK_DELAY))).await;
                    return;
                };
                // JetStream serves a consumer's waiting requests in order: count the message
                // against the oldest.
                let w = &mut s.window;
                if let Some(r) = w.requests.first_mut() {
                    r.remaining = r.remaining.saturating_sub(1);
                    if r.remaining == 0 {
                        w.requests.remove(0);
                    }
                }
                w.in_flight += 1;
                s.backoff = BACKOFF_MIN;
                s.last_message = Some(Instant::now());
                let (deps, target, done) = (self.deps.clone(), s.target.clone(), self.done.clone());
                // Boxed: a delivery's future holds an HTTP request's state (kilobytes), which
                // tokio would otherwise copy whole into the task and again when it ends.
                self.tracker.spawn(Box::pin(async move {
                    let attributes = attributes_of(&message);
                    match &target.filter {
                        // A message the filter policy does not match is settled without an
                        // attempt.
                        Some(f) if !f.matches(&attributes, &message.payload) => {
                            settle_filtered(&deps, &target, &message).await;
                        }
                        _ => {
                            deliver_one(&deps, &target, &message, &attributes).await;
                        }
                    }
                    let _ = done.send(slot);
                }));
            }
            Pulled::Ended {
                slot,
                request,
                status,
                description,
                pending,
            } => {
                let Some(s) = self.slots.get_mut(&slot) else {
                    return;
                };
                s.window.end_request(request);
                let now = Instant::now();
                match status {
                    // Expired, or (without `no_wait`, never) empty: ask again.
                    StatusCode::TIMEOUT | StatusCode::NOT_FOUND => {}
                    StatusCode::REQUEST_TERMINATED
                        if description
                            .as_deref()
                            .is_some_and(|d| d.contains("Leadership Change")) => {}
                    _ => {
                        tracing::debug!(
                            consumer = %s.key.1, %status, ?description, ?pending,
                            "pull request refused"
                        );
                        self.back_off(slot, now);
                        return;
                    }
                }
                self.pull(slot).await;
            }
        }
    }

    /// Starts the task that takes and renews `id`'s delivery lease and reports it.
    fn keep_lease(&self, id: u64) -> tokio_util::sync::DropGuard {
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let Some(s) = self.slots.get(&id) else {
            return guard;
        };
        let key = format!("{}.{}", s.key.0, s.key.1);
        let consumer = s.key.1.clone();
        let (store, holder, commands) = (
            self.deps.store.clone(),
            self.holder.clone(),
            self.commands.clone(),
        );
        tokio::spawn(async move {
            let mut lease = Lease::default();
            let mut renewed = Instant::now();
            loop {
                let held_before = lease.is_held();
                match store.hold_lease(&key, &holder, lease).await {
                    Ok(now_held) => {
                        lease = now_held;
                        renewed = Instant::now();
                    }
                    // Unsure whether it still holds: past the lease's life it must assume not.
                    Err(_) if renewed.elapsed() >= LEASE_TTL * 2 / 3 => lease = Lease::default(),
                    Err(_) => {}
                }
                if lease.is_held() != held_before {
                    let held = lease.is_held();
                    let _ = commands.send(Command::Lease {
                        consumer: consumer.clone(),
                        held,
                    });
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(LEASE_TTL / 3) => {}
                }
            }
            store.release_lease(&key, lease).await;
        });
        guard
    }

    fn back_off(&mut self, id: u64, now: Instant) {
        if let Some(s) = self.slots.get_mut(&id) {
            let at = now + s.backoff;
            s.window.retry_at = Some(at);
            s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
            self.retries.push(Reverse((at, id)));
        }
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            if let Some(s) = self.slots.get_mut(&id) {
                if s.window.retry_at.is_some_and(|t| t <= now) {
                    s.window.retry_at = None;
                }
                if s.window.wake_at.is_some_and(|t| t <= now) {
                    s.window.wake_at = None;
                }
            }
            self.pull(id).await;
        }
    }

    /// Once a [`SWEEP`]: ends expired subscriptions, forgets lost requests, and after a
    /// reconnect asks again for every subscription.
    async fn sweep(&mut self) {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let connects = self.deps.store.connects();
        let reconnected = connects != self.connects;
        self.connects = connects;
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (&id, s) in &mut self.slots {
            if s.target.sub.is_expired(wall) {
                expired.push(id);
                continue;
            }
            let w = &mut s.window;
            let before = w.requests.len();
            if reconnected {
                w.requests.clear();
            } else {
                w.requests.retain(|r| r.lost_at > now);
            }
            if w.requests.len() != before || w.due(now) > 0 {
                due.push(id);
            }
        }
        for id in expired {
            if let Some(s) = self.slots.remove(&id) {
                self.by_consumer.remove(&s.key.1);
                let (deps, sub) = (self.deps.clone(), s.target.sub.clone());
                self.tracker.spawn(async move { deps.expire(&sub).await });
            }
        }
        for id in due {
            self.pull(id).await;
        }
    }
}

/// `options.max_rate` (deliveries per second), read and checked once with the options.
fn max_rate(target: &Target) -> Option<f64> {
    target.sub.options.max_rate
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64, remaining: usize) -> Request {
        Request {
            id,
            remaining,
            lost_at: Instant::now() + Duration::from_secs(120),
        }
    }

    #[tokio::test]
    async fn an_idle_window_asks_for_all_of_itself_once() {
        let now = Instant::now();
        let mut w = Window::new(256);
        assert_eq!(w.due(now), 256);
        w.requests.push(request(1, 256));
        assert_eq!(w.due(now), 0, "one outstanding request is enough");
    }

    #[tokio::test]
    async fn a_busy_window_tops_up_only_when_half_of_it_is_free() {
        let now = Instant::now();
        let mut w = Window::new(256);
        w.requests.push(request(1, 56));
        w.in_flight = 100;
        assert_eq!(w.due(now), 0, "100 free of 256: wait");
        w.in_flight = 72;
        assert_eq!(w.due(now), 128, "128 free: ask for them");
        w.in_flight = 200;
        w.requests.clear();
        assert_eq!(w.due(now), 56, "nothing outstanding: ask for what is free");
        w.in_flight = 256;
        assert_eq!(w.due(now), 0, "a full window never asks");
    }

    #[tokio::test]
    async fn an_ordered_window_has_one_message_at_a_time() {
        let now = Instant::now();
        let mut w = Window::new(1);
        assert_eq!(w.due(now), 1);
        w.in_flight = 1;
        assert_eq!(w.due(now), 0);
    }

    #[tokio::test]
    async fn a_rate_limited_window_asks_only_with_the_lease_one_request_at_a_time_within_its_tokens(
    ) {
        let now = Instant::now();
        let mut w = Window::new(256);
        w.set_rate(Some(10.0), now);
        assert_eq!(w.due(now), 0, "no lease, no request");
        w.leased = true;
        assert_eq!(w.due(now), 1, "a new bucket holds one token");
        w.spend(1);
        w.requests.push(request(1, 1));
        let later = now + Duration::from_secs(5);
        assert_eq!(w.due(later), 0, "one request at a time");
        w.requests.clear();
        assert_eq!(w.due(later), 10, "the burst is one second's worth");
        w.spend(10);
        assert_eq!(w.due(later), 0);
        assert!(w.wake_for_token(later).is_some_and(|at| at > later));
        assert_eq!(w.wake_for_token(later), None, "one wake-up at a time");
        assert_eq!(w.due(later + Duration::from_millis(350)), 3);
    }

    #[tokio::test]
    async fn a_slow_rate_still_delivers_one_message_at_a_time() {
        let now = Instant::now();
        let mut w = Window::new(4);
        w.set_rate(Some(0.5), now);
        w.leased = true;
        assert_eq!(w.due(now), 1);
        w.spend(1);
        assert_eq!(w.due(now + Duration::from_secs(1)), 0);
        assert_eq!(w.due(now + Duration::from_secs(2)), 1);
    }

    #[tokio::test]
    async fn a_backed_off_window_waits() {
        let now = Instant::now();
        let mut w = Window::new(8);
        w.retry_at = Some(now + Duration::from_secs(1));
        assert_eq!(w.due(now), 0);
        assert_eq!(w.due(now + Duration::from_secs(2)), 8);
        w.end_request(99);
    }
}
