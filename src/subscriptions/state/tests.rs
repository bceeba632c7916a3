//! Unit tests of the state machine: reads, deliveries, acks and nacks,
//! the checkpoint and its gate, the strategies, and replays, driven with
//! explicit instants (no clock, no I/O).

use super::*;
use crate::store::RecordedEvent;

fn message(position: u64, stream: &str) -> Message {
    Message {
        id: Uuid::from_u128(u128::from(position) + 1),
        position,
        event: ReadEvent {
            event: RecordedEvent {
                stream: stream.into(),
                number: position,
                position,
                id: Uuid::from_u128(u128::from(position) + 1),
                event_type: "t".into(),
                created_micros: 0,
                is_json: true,
                metadata_is_json: false,
                data: bytes::Bytes::from_static(b"{}"),
                metadata: bytes::Bytes::new(),
            },
            link: None,
        },
        pin: stream.to_owned(),
        origin: Origin::Source,
    }
}

fn settings() -> Settings {
    Settings { message_timeout: Duration::from_secs(10), max_retry_count: 2, ..Settings::default() }
}

/// A group that has read positions `0..count` of stream `s`.
fn group_with(settings: Settings, count: u64, now: Instant) -> GroupState {
    let mut state = GroupState::new(settings, 0, None, 0, now);
    read(&mut state, (0..count).map(|p| message(p, "s")).collect(), count);
    state
}

fn read(state: &mut GroupState, messages: Vec<Message>, next_read: u64) {
    let request = state.read_request().expect("room to read");
    assert!(state.apply_read(request, messages, next_read, true));
}

fn positions(delivered: &[Delivered]) -> Vec<u64> {
    delivered.iter().map(|d| d.message.position).collect()
}

fn ids(delivered: &[Delivered]) -> Vec<Uuid> {
    delivered.iter().map(|d| d.message.id).collect()
}

#[test]
fn acks_in_order_move_the_checkpoint() {
    let now = Instant::now();
    let mut state = group_with(settings(), 5, now);
    let taken = state.take("a", 3, now).expect("admitted");
    assert_eq!(positions(&taken), [0, 1, 2]);
    assert_eq!(state.ack("a", &ids(&taken), now), 3);
    assert_eq!(state.snapshot(), Checkpoint { next: 3, done: vec![] });
    assert_eq!(state.ack("a", &ids(&taken), now), 0, "a second ack is ignored");
}

#[test]
fn acks_past_an_outstanding_message_are_listed_as_ranges() {
    let now = Instant::now();
    let mut state = group_with(settings(), 10, now);
    let taken = state.take("a", 6, now).expect("admitted");
    let acked: Vec<Uuid> =
        taken.iter().filter(|d| ![1, 4].contains(&d.message.position)).map(|d| d.message.id).collect();
    state.ack("a", &acked, now);
    // 0 done; 1 outstanding; 2-3 done; 4 outstanding; 5 done; 6-9 buffered.
    assert_eq!(state.snapshot(), Checkpoint { next: 1, done: vec![(2, 3), (5, 5)] });

    // After a crash the group restarts from that checkpoint and never
    // delivers 2, 3 or 5 again.
    let mut restarted = GroupState::new(settings(), 0, Some(state.snapshot()), 0, now);
    read(&mut restarted, (1..10).map(|p| message(p, "s")).collect(), 10);
    let again = restarted.take("a", 100, now).expect("admitted");
    assert_eq!(positions(&again), [1, 4, 6, 7, 8, 9]);
    restarted.ack("a", &ids(&again), now);
    assert_eq!(restarted.snapshot(), Checkpoint { next: 10, done: vec![] });
}

#[test]
fn recovered_ranges_survive_until_they_are_read_past() {
    let now = Instant::now();
    let checkpoint = Checkpoint { next: 5, done: vec![(50, 60)] };
    let mut state = GroupState::new(settings(), 0, Some(checkpoint.clone()), 0, now);
    assert_eq!(state.snapshot(), checkpoint, "nothing read yet: the same checkpoint");
    read(&mut state, (5..20).map(|p| message(p, "s")).collect(), 20);
    let taken = state.take("a", 15, now).expect("admitted");
    state.ack("a", &ids(&taken), now);
    assert_eq!(state.snapshot(), Checkpoint { next: 20, done: vec![(50, 60)] });
}

#[test]
fn timeouts_retry_then_park() {
    let now = Instant::now();
    let mut state = group_with(settings(), 1, now);
    let timeout = state.settings.message_timeout;
    let mut at = now;
    for expected_retry in 0..=2 {
        let taken = state.take("a", 1, at).expect("admitted");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].retry_count, expected_retry);
        assert_eq!(state.next_wake(), Some(at + timeout), "the driver wakes at the deadline");
        at += timeout + Duration::from_millis(1);
        assert!(state.expire(at));
    }
    assert!(state.take("a", 1, at).expect("admitted").is_empty(), "parking, not retrying");
    let parking = state.take_parking();
    assert_eq!(parking.len(), 1);
    assert_eq!(parking[0].reason, PARKED_AFTER_RETRIES);
    assert_eq!(state.snapshot().next, 0, "not done until the park is durable");
    state.parked(&[parking[0].message.id], at);
    assert_eq!(state.snapshot().next, 1);
}

#[test]
fn a_late_ack_of_a_message_waiting_for_its_retry_counts() {
    let now = Instant::now();
    let mut state = group_with(settings(), 1, now);
    let taken = state.take("a", 1, now).expect("admitted");
    assert!(state.expire(now + Duration::from_secs(11)));
    assert_eq!(state.ack("a", &ids(&taken), now), 1);
    assert!(state.take("b", 1, now).expect("admitted").is_empty());
}

#[test]
fn nack_actions() {
    let now = Instant::now();
    let mut state = group_with(settings(), 4, now);
    let taken = state.take("a", 4, now).expect("admitted");
    let [retry, skip, park, stop] = [0, 1, 2, 3].map(|i| taken[i].message.id);
    state.nack("a", &[retry], NackAction::Retry, now);
    state.nack("a", &[skip], NackAction::Skip, now);
    state.nack("a", &[park], NackAction::Park, now);
    assert_eq!(state.take_parking()[0].reason, PARKED_BY_CONSUMER);
    let again = state.take("a", 4, now).expect("admitted");
    assert_eq!(positions(&again), [0]);
    assert_eq!(again[0].retry_count, 1);
    // Stop gives back everything the consumer holds, uncounted.
    state.nack("a", &[stop], NackAction::Stop, now);
    let after_stop = state.take("b", 4, now).expect("admitted");
    assert_eq!(positions(&after_stop), [0, 3]);
    assert_eq!(after_stop[1].retry_count, 0);
    assert_eq!(after_stop[0].retry_count, 1);
    assert!(state.stats(now).connections.iter().all(|c| c.name != "a"), "a was released");
}

#[test]
fn the_gate_holds_new_messages_until_a_checkpoint_is_durable() {
    let now = Instant::now();
    let limited = Settings { max_check_point_count: 4, min_check_point_count: 1, ..settings() };
    let mut state = group_with(limited, 10, now);
    let first = state.take("a", 10, now).expect("admitted");
    assert_eq!(first.len(), 4);
    assert!(state.gate_closed());
    assert!(!state.wants_checkpoint(now), "nothing done yet");
    state.ack("a", &ids(&first), now);
    assert!(state.wants_checkpoint(now));
    let checkpoint = state.begin_checkpoint(now).expect("something to write");
    assert!(state.take("a", 10, now).expect("admitted").is_empty(), "still closed while writing");
    state.end_checkpoint(Some(checkpoint));
    assert_eq!(state.take("a", 10, now).expect("admitted").len(), 4);
}

#[test]
fn a_failed_checkpoint_is_tried_again() {
    let now = Instant::now();
    let eager = Settings { max_check_point_count: 2, min_check_point_count: 1, ..settings() };
    let mut state = group_with(eager, 2, now);
    let taken = state.take("a", 2, now).expect("admitted");
    state.ack("a", &ids(&taken), now);
    assert!(state.begin_checkpoint(now).is_some());
    state.end_checkpoint(None);
    assert!(state.wants_checkpoint(now));
    assert_eq!(state.durable_checkpoint().next, 0);
}

#[test]
fn timed_checkpoints_need_the_minimum_count() {
    let now = Instant::now();
    let timed = Settings { min_check_point_count: 2, ..settings() };
    let after = timed.check_point_after;
    let mut state = group_with(timed, 3, now);
    let taken = state.take("a", 1, now).expect("admitted");
    state.ack("a", &ids(&taken), now);
    assert!(!state.wants_checkpoint(now + after), "one is below the minimum");
    let consumer_expiry = now + liveness(Duration::from_secs(10));
    assert_eq!(state.next_wake(), Some(consumer_expiry), "no checkpoint timer is armed");
    let taken = state.take("a", 1, now).expect("admitted");
    state.ack("a", &ids(&taken), now);
    assert!(!state.wants_checkpoint(now));
    assert!(state.wants_checkpoint(now + after));
    assert_eq!(state.next_wake(), Some(now + after));
}

#[test]
fn pinned_keeps_each_stream_on_one_consumer() {
    let now = Instant::now();
    let pinned = Settings { strategy: Strategy::Pinned, ..settings() };
    let mut state = GroupState::new(pinned, 0, None, 0, now);
    assert!(state.take("a", 1, now).expect("admitted").is_empty());
    assert!(state.take("b", 1, now).expect("admitted").is_empty());
    let streams = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"];
    let messages = (0..60).map(|p| message(p, streams[p as usize % streams.len()])).collect();
    read(&mut state, messages, 60);
    let mut owner: HashMap<String, &str> = HashMap::new();
    for round in 0..40 {
        let consumer = if round % 2 == 0 { "a" } else { "b" };
        let taken = state.take(consumer, 3, now).expect("admitted");
        for delivered in &taken {
            let previous = owner.insert(delivered.message.pin.clone(), consumer);
            assert!(previous.is_none_or(|p| p == consumer), "{} moved", delivered.message.pin);
        }
        state.ack(consumer, &ids(&taken), now);
    }
    assert_eq!(state.snapshot().next, 60, "everything was delivered");
    assert!(owner.values().any(|c| *c == "a") && owner.values().any(|c| *c == "b"));
}

#[test]
fn dispatch_to_single_serves_one_consumer_at_a_time() {
    let now = Instant::now();
    let single = Settings { strategy: Strategy::DispatchToSingle, ..settings() };
    let mut state = group_with(single, 5, now);
    assert_eq!(state.take("first", 1, now).expect("admitted").len(), 1);
    assert!(state.take("second", 5, now).expect("admitted").is_empty());
    let later = now + liveness(Duration::from_secs(10)) + Duration::from_secs(11);
    state.expire(later);
    // `first` held a message that timed out and then stopped asking.
    assert_eq!(state.take("second", 5, later).expect("admitted").len(), 5);
}

#[test]
fn replayed_parked_messages_come_back_and_truncate_when_done() {
    let now = Instant::now();
    let mut state = GroupState::new(settings(), 0, None, 3, now);
    assert_eq!(state.request_replay(Some(4)), 2);
    assert_eq!(state.replay_read(), Some((3, 2)));
    let parked =
        |number: u64, position: u64| Message { origin: Origin::Parked(number), ..message(position, "s") };
    state.apply_replay(3, vec![parked(3, 10), parked(4, 11)], 5);
    assert_eq!(state.replay_read(), None);
    let taken = state.take("a", 5, now).expect("admitted");
    assert_eq!(positions(&taken), [10, 11]);
    assert_eq!(state.truncate_target(), None, "nothing done yet");
    state.ack("a", &ids(&taken)[..1], now);
    assert_eq!(state.truncate_target(), Some(4));
    state.ack("a", &ids(&taken)[1..], now);
    assert_eq!(state.truncate_target(), Some(5));
    state.truncated(5);
    assert_eq!(state.truncate_target(), None);
    assert_eq!(state.snapshot().next, 0, "replays never move the checkpoint");
}

#[test]
fn changing_resolve_link_tos_rereads_what_was_not_delivered() {
    let now = Instant::now();
    let mut state = group_with(settings(), 6, now);
    let taken = state.take("a", 2, now).expect("admitted");
    state.update_settings(Settings { resolve_link_tos: true, ..settings() });
    let request = state.read_request().expect("room");
    assert_eq!(request.from, 2);
    assert!(state.apply_read(request, (2..6).map(|p| message(p, "s")).collect(), 6, true));
    state.ack("a", &ids(&taken), now);
    assert_eq!(positions(&state.take("a", 10, now).expect("admitted")), [2, 3, 4, 5]);
}

#[test]
fn a_fresh_read_is_served_only_by_a_read_that_started_after_it_was_asked() {
    let now = Instant::now();
    let mut state = GroupState::new(settings(), 0, None, 0, now);
    let (before, asked) = state.read_tickets();
    assert!(!asked);
    let ticket = state.request_read().expect("the buffer has room");
    assert!(!state.served(before), "a read that started earlier serves nobody");
    assert!(!state.is_served(ticket));
    let (tickets, asked) = state.read_tickets();
    assert!(asked);
    assert!(state.served(tickets));
    assert!(state.is_served(ticket));

    let full = Settings { buffer_size: 2, read_batch_size: 1, live_buffer_size: 2, ..settings() };
    let mut state = group_with(full, 2, now);
    assert_eq!(state.request_read(), None, "a full buffer: reading cannot help");
}

#[test]
fn the_buffer_limits_read_ahead() {
    let now = Instant::now();
    let small = Settings { buffer_size: 5, read_batch_size: 2, live_buffer_size: 3, ..settings() };
    let mut state = GroupState::new(small, 0, None, 0, now);
    let request = state.read_request().expect("room");
    assert_eq!(request.count, 2);
    assert!(state.apply_read(request, (0..2).map(|p| message(p, "s")).collect(), 2, false));
    let request = state.read_request().expect("room");
    assert!(state.apply_read(request, (2..4).map(|p| message(p, "s")).collect(), 4, false));
    assert_eq!(state.read_request().map(|r| r.count), Some(1));
    let request = state.read_request().expect("room");
    assert!(state.apply_read(request, vec![message(4, "s")], 5, true));
    assert_eq!(state.read_request(), None, "live: the live buffer (3) is full");
    let stale = ReadRequest { from: 0, count: 1, epoch: 0 };
    assert!(!state.apply_read(stale, vec![message(0, "s")], 1, true), "stale reads are dropped");
}
