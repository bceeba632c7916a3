//! The system projections: which system streams an event is linked into.
//!
//! EventStore builds `$ce-`, `$et-` and `$streams` asynchronously, so they lag
//! behind the log. Here the writer adds the links in the same atomic batch as
//! the event, so when an append is acknowledged its links are readable.
//!
//! A link is not a separate log record: it is an index entry of the system
//! stream pointing at the target's global position. The links one batch adds
//! to one system stream share one entry, a run (see `codec`). Reads present it as a
//! `$>` link event (data `"{n}@{stream}"`) or resolve it to the target.
//!
//! Only user streams are projected; events in `$`-streams (metadata streams,
//! parked-message streams) are system bookkeeping and are left out, so that
//! `$streams` lists what users wrote and `$et-$metadata` does not exist.

/// Which system projections are maintained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projections {
    /// `$ce-{category}`: every event of every stream in the category.
    pub by_category: bool,
    /// `$et-{type}`: every event of the type.
    pub by_event_type: bool,
    /// `$streams`: one link per stream, to its event 0.
    pub streams: bool,
}

impl Default for Projections {
    fn default() -> Self {
        Self { by_category: true, by_event_type: true, streams: true }
    }
}

/// The stream listing every stream.
pub const STREAMS_STREAM: &str = "$streams";
pub const CATEGORY_PREFIX: &str = "$ce-";
pub const EVENT_TYPE_PREFIX: &str = "$et-";

/// The projections a system stream belongs to, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    ByCategory,
    ByEventType,
    Streams,
}

impl Projection {
    pub const ALL: [Projection; 3] = [Self::ByCategory, Self::ByEventType, Self::Streams];

    /// The name used in settings and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::ByCategory => "by-category",
            Self::ByEventType => "by-event-type",
            Self::Streams => "streams",
        }
    }

    /// The prefix every one of this projection's stream names starts with,
    /// and whether the name is exactly that (`$streams`) rather than a
    /// family (`$ce-…`).
    pub fn stream_prefix(self) -> (&'static str, bool) {
        match self {
            Self::ByCategory => (CATEGORY_PREFIX, false),
            Self::ByEventType => (EVENT_TYPE_PREFIX, false),
            Self::Streams => (STREAMS_STREAM, true),
        }
    }

    /// Whether `stream` is one of this projection's streams.
    pub fn owns(self, stream: &str) -> bool {
        match self {
            Self::ByCategory => stream.starts_with(CATEGORY_PREFIX),
            Self::ByEventType => stream.starts_with(EVENT_TYPE_PREFIX),
            Self::Streams => stream == STREAMS_STREAM,
        }
    }
}

impl Projections {
    /// None at all.
    pub const NONE: Projections = Projections { by_category: false, by_event_type: false, streams: false };

    pub fn set(&mut self, projection: Projection, enabled: bool) {
        match projection {
            Projection::ByCategory => self.by_category = enabled,
            Projection::ByEventType => self.by_event_type = enabled,
            Projection::Streams => self.streams = enabled,
        }
    }

    pub fn is_enabled(&self, projection: Projection) -> bool {
        match projection {
            Projection::ByCategory => self.by_category,
            Projection::ByEventType => self.by_event_type,
            Projection::Streams => self.streams,
        }
    }

    /// The system streams an event of `event_type` in `stream` is linked
    /// into; `creates_stream` when it is the stream's event 0.
    pub fn links_for(&self, stream: &str, event_type: &str, creates_stream: bool) -> Vec<String> {
        self.links(stream, event_type, creates_stream).into_iter().flatten().map(|link| link.name()).collect()
    }

    /// [`Self::links_for`] without building the names: the writer meets
    /// the same few system streams for every event of an append.
    pub fn links<'a>(
        &self,
        stream: &'a str,
        event_type: &'a str,
        creates_stream: bool,
    ) -> [Option<Link<'a>>; 3] {
        if is_system_stream(stream) {
            return [None, None, None];
        }
        [
            category(stream).filter(|_| self.by_category).map(Link::Category),
            (self.by_event_type && event_type != super::LINK_EVENT_TYPE)
                .then_some(Link::EventType(event_type)),
            (self.streams && creates_stream).then_some(Link::Streams),
        ]
    }

    /// The projections as words, in a fixed order (`by-category,streams`;
    /// `none`): how a database records them.
    pub fn words(self) -> String {
        let names = self.names();
        if names.is_empty() { "none".to_owned() } else { names.join(",") }
    }

    /// The names of the projections on, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        Projection::ALL
            .into_iter()
            .filter(|projection| self.is_enabled(*projection))
            .map(Projection::name)
            .collect()
    }

    /// Reads [`Self::words`]; a word that names no projection is the error.
    pub fn from_words(text: &str) -> Result<Self, String> {
        let mut projections = Projections::NONE;
        for word in text.split(',').filter(|word| *word != "none") {
            let projection = Projection::ALL
                .into_iter()
                .find(|projection| projection.name() == word)
                .ok_or_else(|| word.to_owned())?;
            projections.set(projection, true);
        }
        Ok(projections)
    }

    /// Like [`Self::links_for`], restricted to one projection (rebuilds).
    pub fn links_of(
        projection: Projection,
        stream: &str,
        event_type: &str,
        creates_stream: bool,
    ) -> Vec<String> {
        let mut only = Projections::NONE;
        only.set(projection, true);
        only.links_for(stream, event_type, creates_stream)
    }
}

/// A system stream an event is linked into, named by what it is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link<'a> {
    /// `$ce-{category}`.
    Category(&'a str),
    /// `$et-{type}`.
    EventType(&'a str),
    /// `$streams`.
    Streams,
}

impl Link<'_> {
    /// The system stream's name.
    pub fn name(&self) -> String {
        match self {
            Self::Category(category) => format!("{CATEGORY_PREFIX}{category}"),
            Self::EventType(event_type) => format!("{EVENT_TYPE_PREFIX}{event_type}"),
            Self::Streams => STREAMS_STREAM.to_owned(),
        }
    }

    /// Whether `name` is this system stream's name (without building it).
    pub fn is(&self, name: &str) -> bool {
        match self {
            Self::Category(category) => name.strip_prefix(CATEGORY_PREFIX) == Some(*category),
            Self::EventType(event_type) => name.strip_prefix(EVENT_TYPE_PREFIX) == Some(*event_type),
            Self::Streams => name == STREAMS_STREAM,
        }
    }
}

/// Streams whose names start with `$` belong to the system.
pub fn is_system_stream(stream: &str) -> bool {
    stream.starts_with('$')
}

/// The category of a stream: the part before the first `-`, when there is a
/// `-` that is not the first character and the stream is not a system stream.
pub fn category(stream: &str) -> Option<&str> {
    if is_system_stream(stream) {
        return None;
    }
    match stream.find('-') {
        Some(index) if index > 0 => Some(&stream[..index]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_rules() {
        assert_eq!(category("Order-123"), Some("Order"));
        assert_eq!(category("Order-123-abc"), Some("Order"));
        assert_eq!(category("Order--1"), Some("Order"));
        assert_eq!(category("Order-"), Some("Order"));
        assert_eq!(category("Order"), None);
        assert_eq!(category("-Order"), None);
        assert_eq!(category("-"), None);
        assert_eq!(category("$ce-Order"), None);
        assert_eq!(category("$$Order-1"), None);
        assert_eq!(category("Ordér-1"), Some("Ordér"));
    }

    #[test]
    fn links_of_a_user_event() {
        let all = Projections::default();
        assert_eq!(all.links_for("Order-1", "Placed", true), ["$ce-Order", "$et-Placed", "$streams"]);
        assert_eq!(all.links_for("Order-1", "Placed", false), ["$ce-Order", "$et-Placed"]);
        assert_eq!(all.links_for("plain", "Placed", false), ["$et-Placed"]);
        assert!(all.links_for("$$Order-1", "$metadata", true).is_empty());
        assert_eq!(all.links_for("Order-1", "$>", false), ["$ce-Order"]);
        assert!(Projections::NONE.links_for("Order-1", "Placed", true).is_empty());
        // A link knows its system stream's name without building it.
        let links: Vec<Link<'_>> = all.links("Order-1", "Placed", true).into_iter().flatten().collect();
        assert_eq!(links, [Link::Category("Order"), Link::EventType("Placed"), Link::Streams]);
        for link in &links {
            assert!(link.is(&link.name()), "{link:?}");
        }
        assert!(!Link::Category("Order").is("$et-Order") && !Link::EventType("Order").is("$ce-Order"));
        assert!(!Link::Category("Order").is("$ce-Orders") && !Link::Streams.is("$streams2"));
        assert_eq!(Projections::links_of(Projection::Streams, "Order-1", "Placed", true), ["$streams"]);
    }
}
