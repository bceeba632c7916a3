//! Event ids and where each was written, in memory: the index's live
//! segments and the ids a batch adds.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use uuid::Uuid;

use super::Owner;

/// Event ids with the stream and number each was written as. Ids are unique
/// per stream, not per store: one command's id is often the id of the event
/// it causes in each of several streams. So an id may have several owners,
/// one per stream. Nearly every id has one, and the map keeps that case to
/// one hash-map entry without an allocation of its own; the others go to a
/// second map that is empty in most stores.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IdOwners {
    first: HashMap<Uuid, Owner>,
    /// The owners after the first, for ids written to several streams.
    more: HashMap<Uuid, Vec<Owner>>,
}

impl IdOwners {
    /// Records that `id` was written as `owner`. An id is written to a
    /// stream at most once (a second write is a retry or refused), so an
    /// owner in the same stream replaces the one recorded.
    pub(crate) fn insert(&mut self, id: Uuid, owner: Owner) {
        let first = match self.first.entry(id) {
            Entry::Vacant(vacant) => {
                vacant.insert(owner);
                return;
            }
            Entry::Occupied(occupied) => occupied.into_mut(),
        };
        if first.0 == owner.0 {
            *first = owner;
            return;
        }
        let more = self.more.entry(id).or_default();
        match more.iter_mut().find(|(stream, _)| *stream == owner.0) {
            Some(same) => *same = owner,
            None => more.push(owner),
        }
    }

    /// The number `id` was written as in `stream`, if it was.
    pub(crate) fn number_in(&self, id: &Uuid, stream: &str) -> Option<u64> {
        let (first, number) = self.first.get(id)?;
        if **first == *stream {
            return Some(*number);
        }
        let more = self.more.get(id)?;
        more.iter().find(|(owner, _)| **owner == *stream).map(|(_, number)| *number)
    }

    /// Whether `id` was written to any stream.
    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.first.contains_key(id)
    }

    /// How many (id, owner) pairs the map holds.
    pub(crate) fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Every distinct id.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &Uuid> {
        self.first.keys()
    }

    /// Every (id, owner) pair, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Uuid, &Owner)> {
        let more = self.more.iter().flat_map(|(id, owners)| owners.iter().map(move |owner| (id, owner)));
        self.first.iter().chain(more)
    }

    /// Adds every pair of `other`.
    pub(crate) fn extend(&mut self, other: &IdOwners) {
        for (id, owner) in other.iter() {
            self.insert(*id, owner.clone());
        }
    }

    /// Empties the map into its pairs, sorted by id.
    pub(crate) fn drain_sorted(&mut self) -> Vec<(Uuid, Owner)> {
        let mut entries: Vec<(Uuid, Owner)> = self.first.drain().collect();
        entries.extend(
            self.more.drain().flat_map(|(id, owners)| owners.into_iter().map(move |owner| (id, owner))),
        );
        entries.sort_unstable_by_key(|(id, _)| *id);
        entries
    }
}

impl FromIterator<(Uuid, Owner)> for IdOwners {
    fn from_iter<I: IntoIterator<Item = (Uuid, Owner)>>(pairs: I) -> Self {
        let mut owners = Self::default();
        for (id, owner) in pairs {
            owners.insert(id, owner);
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn an_id_has_one_owner_per_stream() {
        let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut owners = IdOwners::default();
        owners.insert(id, (Arc::from("order-1"), 0));
        owners.insert(id, (Arc::from("customer-1"), 7));
        owners.insert(id, (Arc::from("audit"), 3));
        owners.insert(other, (Arc::from("order-1"), 1));
        assert_eq!(owners.number_in(&id, "order-1"), Some(0));
        assert_eq!(owners.number_in(&id, "customer-1"), Some(7));
        assert_eq!(owners.number_in(&id, "audit"), Some(3));
        assert_eq!(owners.number_in(&id, "elsewhere"), None);
        assert_eq!(owners.number_in(&other, "customer-1"), None);
        assert_eq!((owners.len(), owners.ids().count(), owners.iter().count()), (4, 2, 4));

        owners.insert(id, (Arc::from("customer-1"), 8));
        assert_eq!((owners.number_in(&id, "customer-1"), owners.len()), (Some(8), 4));

        let copy: IdOwners = owners.iter().map(|(id, owner)| (*id, owner.clone())).collect();
        assert_eq!(copy, owners);
        let sorted = owners.drain_sorted();
        assert_eq!(sorted.len(), 4);
        assert!(sorted.windows(2).all(|pair| pair[0].0 <= pair[1].0));
        assert!(owners.is_empty());
    }
}
