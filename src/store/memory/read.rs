//! The memory store's read path: stream ranges, single events and `$all`,
//! with retention applied and links materialised, as the contract says.

use std::collections::HashMap;

use super::{Data, Entry, MAX_ALL_SCAN, Stream};
use crate::store::links::link_event;
use crate::store::retention::now_micros;
use crate::store::rules;
use crate::store::{
    AllRead, AllSlice, Direction, ReadEvent, RecordedEvent, StoreError, StreamRead, StreamSlice, StreamView,
};

impl Data {
    /// The state of a stream a read may read, or why it may not.
    fn readable(&self, stream: &str) -> Result<&Stream, StoreError> {
        match self.streams.get(stream) {
            Some(found) if found.state.tombstoned => Err(StoreError::StreamDeleted),
            Some(found) if found.state.exists() => Ok(found),
            _ => Err(StoreError::StreamNotFound),
        }
    }

    fn view(stream: &Stream) -> Result<StreamView, StoreError> {
        Ok(StreamView {
            last_number: stream.state.next_number.saturating_sub(1),
            first_visible: stream.first_visible(now_micros())?,
            settings: stream.state.settings,
        })
    }

    pub(super) fn read_stream(&self, read: &StreamRead) -> Result<StreamSlice, StoreError> {
        let stream = self.readable(&read.stream)?;
        let view = Self::view(stream)?;
        let mut visible = Visibility::default();
        let Some(last) = stream.state.last_number() else {
            return Ok(StreamSlice { view, events: Vec::new() });
        };
        let (low, high) = rules::read_range(read, last);
        let numbers = low.max(view.first_visible)..=high.min(last);
        // Backward, the highest numbers within the read's bytes; forward,
        // the lowest (see `rules::READ_BYTES`).
        let numbers: Box<dyn Iterator<Item = u64>> = match read.direction {
            Direction::Forward => Box::new(numbers),
            Direction::Backward => Box::new(numbers.rev()),
        };
        let mut events = Vec::new();
        let mut bytes = rules::ReadBytes::default();
        for number in numbers {
            if let Some(entry) = stream.entry(number) {
                let event =
                    self.materialise(&read.stream, number, entry, read.resolve_links, &mut visible)?;
                if !bytes.take(&event.event) {
                    break;
                }
                events.push(event);
            }
        }
        if read.direction == Direction::Backward {
            events.reverse();
        }
        Ok(StreamSlice { view, events })
    }

    pub(super) fn read_event(
        &self,
        name: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        let stream = self.readable(name)?;
        let view = Self::view(stream)?;
        if number < view.first_visible {
            return Ok((view, None));
        }
        let Some(entry) = stream.entry(number) else { return Ok((view, None)) };
        let event = self.materialise(name, number, entry, resolve_links, &mut Visibility::default())?;
        // v5: a resolved read of a link whose target is gone is a 404.
        let gone = matches!(entry, Entry::Link { .. }) && resolve_links && event.link.is_none();
        Ok((view, (!gone).then_some(event)))
    }

    /// What a read returns for `entry`, event `number` of `stream`: the
    /// event, or a link shown as a `$>` event, or resolved to its target
    /// when asked and the target is still visible.
    fn materialise(
        &self,
        stream: &str,
        number: u64,
        entry: &Entry,
        resolve_links: bool,
        visible: &mut Visibility,
    ) -> Result<ReadEvent, StoreError> {
        match entry {
            Entry::Event(event) => Ok(ReadEvent { event: event.clone(), link: None }),
            Entry::Link { position, created_micros, number: target_number, stream: target } => {
                let link = link_event(stream, number, *position, *created_micros, *target_number, target);
                if resolve_links {
                    if let Some(event) = self.visible_event(target, *target_number, visible)? {
                        return Ok(ReadEvent { event, link: Some(Box::new(link)) });
                    }
                }
                Ok(ReadEvent { event: link, link: None })
            }
        }
    }

    /// Event `number` of `stream`, if a read can still see it.
    fn visible_event(
        &self,
        stream: &str,
        number: u64,
        visible: &mut Visibility,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        if visible.from(self, stream)?.is_none_or(|first| number < first) {
            return Ok(None);
        }
        match self.streams.get(stream).and_then(|found| found.entry(number)) {
            Some(Entry::Event(event)) => Ok(Some(event.clone())),
            // Links point at events of user streams, which hold no links.
            Some(Entry::Link { .. }) => {
                Err(StoreError::Corrupt(format!("{number}@{stream} is a link, not an event")))
            }
            None => Ok(None),
        }
    }

    pub(super) fn read_all(&self, read: AllRead) -> Result<AllSlice, StoreError> {
        let next_position = self.log.len() as u64;
        let count = usize::try_from(read.count.max(1)).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut scanned: Option<(u64, u64)> = None;
        let Some(last) = next_position.checked_sub(1) else {
            return Ok(AllSlice { next_position, scanned, events, may_expire: true });
        };
        let positions: Box<dyn Iterator<Item = u64>> = match read.direction {
            Direction::Forward => {
                let from = read.from.unwrap_or(last);
                if from > last {
                    return Ok(AllSlice { next_position, scanned, events, may_expire: true });
                }
                Box::new(from..=last)
            }
            Direction::Backward => Box::new((0..=read.from.unwrap_or(last).min(last)).rev()),
        };
        let mut visible = Visibility::default();
        let mut budget = MAX_ALL_SCAN;
        let mut bytes = rules::ReadBytes::default();
        for position in positions {
            if budget == 0 {
                break;
            }
            // Scavenged positions are not examined: there is nothing there.
            let Some(Some((stream, number))) = usize::try_from(position).ok().and_then(|i| self.log.get(i))
            else {
                continue;
            };
            budget -= 1;
            // Events that retention or a delete hid are skipped.
            let event = self.visible_event(stream, *number, &mut visible)?;
            if event.as_ref().is_some_and(|event| !bytes.take(event)) {
                // Not examined: the next read starts here.
                break;
            }
            scanned = Some(match scanned {
                None => (position, position),
                Some((low, high)) => (low.min(position), high.max(position)),
            });
            if let Some(event) = event {
                events.push(event);
                if events.len() >= count {
                    break;
                }
            }
        }
        if read.direction == Direction::Backward {
            events.reverse();
        }
        Ok(AllSlice { next_position, scanned, events, may_expire: true })
    }
}

/// Per stream a read touched, the lowest number it can see; `None` when it
/// can see none (deleted, tombstoned, never written). Worked out once per
/// stream per read, as the sled store does.
#[derive(Default)]
struct Visibility(HashMap<String, Option<u64>>);

impl Visibility {
    fn from(&mut self, data: &Data, stream: &str) -> Result<Option<u64>, StoreError> {
        if let Some(first) = self.0.get(stream) {
            return Ok(*first);
        }
        let first = match data.streams.get(stream) {
            Some(found) if !found.state.tombstoned && !found.state.soft_deleted => {
                Some(Data::view(found)?.first_visible)
            }
            _ => None,
        };
        self.0.insert(stream.to_owned(), first);
        Ok(first)
    }
}
