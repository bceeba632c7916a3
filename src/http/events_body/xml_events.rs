//! The XML events format: `<Events><Event><EventId/><EventType/><Data/>
//! <Metadata/></Event>…</Events>`, read with [`crate::xml::walk`], so a
//! body that is not well-formed XML 1.0 is refused whole. Element names
//! match case-insensitively and without their namespace prefix, as v5's
//! did; each field may appear once in an event.
//!
//! A field holding elements is kept as the markup it is (the bytes between
//! its tags); one holding only text is that text, references resolved and
//! CDATA sections taken exactly as they are, with the whitespace around it
//! trimmed (not inside CDATA: that is content).

use std::ops::Range;

use super::{Draft, Payload};
use crate::xml::{self, Node, NotWellFormed};

/// Why an events document was refused: not XML, or not the format.
pub(super) enum Refused {
    NotWellFormed(NotWellFormed),
    Format(String),
}

impl From<NotWellFormed> for Refused {
    fn from(problem: NotWellFormed) -> Self {
        Self::NotWellFormed(problem)
    }
}

/// The four fields of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    EventId,
    EventType,
    Data,
    Metadata,
}

impl Field {
    const ALL: [Self; 4] = [Self::EventId, Self::EventType, Self::Data, Self::Metadata];

    fn named(local_name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.name().eq_ignore_ascii_case(local_name))
    }

    fn name(self) -> &'static str {
        match self {
            Self::EventId => "EventId",
            Self::EventType => "EventType",
            Self::Data => "Data",
            Self::Metadata => "Metadata",
        }
    }
}

/// The field being read.
struct Open {
    field: Field,
    content_start: usize,
    /// Holds elements: kept as markup.
    has_elements: bool,
    /// Its text so far, and the part of it that is kept: from the first
    /// character that is not whitespace outside CDATA to the last.
    text: String,
    kept: Option<Range<usize>>,
}

impl Open {
    fn push(&mut self, piece: &str, exact: bool) {
        let at = self.text.len();
        self.text.push_str(piece);
        let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
        let kept = if exact {
            (!piece.is_empty()).then(|| at..at + piece.len())
        } else {
            let start = piece.find(|c| !is_space(c));
            let end = piece
                .rfind(|c| !is_space(c))
                .map(|end| end + piece[end..].chars().next().map_or(1, char::len_utf8));
            start.zip(end).map(|(start, end)| at + start..at + end)
        };
        if let Some(kept) = kept {
            self.kept = Some(match self.kept.take() {
                Some(before) => before.start..kept.end,
                None => kept,
            });
        }
    }

    fn into_payload(self, document: &str, content_end: usize) -> Payload {
        if self.has_elements {
            let markup = document.get(self.content_start..content_end).unwrap_or_default().trim();
            return Payload::Markup(markup.as_bytes().to_vec());
        }
        match self.kept {
            Some(kept) => Payload::Text(self.text[kept].to_owned()),
            None => Payload::Absent,
        }
    }
}

/// The reader's place in the document.
#[derive(Default)]
struct Reading {
    depth: usize,
    drafts: Vec<Draft>,
    /// The event being read, and which of its fields were given (indexed
    /// by [`Field`]), so a field given twice is refused.
    event: Option<(Draft, [bool; 4])>,
    open: Option<Open>,
}

/// Parses an events document into drafts.
pub(super) fn drafts(document: &str) -> Result<Vec<Draft>, Refused> {
    let mut reading = Reading::default();
    xml::walk(document, |node| reading.visit(document, node))?;
    Ok(reading.drafts)
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

impl Reading {
    fn visit(&mut self, document: &str, node: Node<'_>) -> Result<(), Refused> {
        let format = |message: String| Err(Refused::Format(message));
        match node {
            Node::Start { name, content_start } => {
                self.depth += 1;
                match self.depth {
                    1 if local(name).eq_ignore_ascii_case("events") => {}
                    1 => return format(format!("The root element must be <Events>, not <{name}>.")),
                    2 if local(name).eq_ignore_ascii_case("event") => {
                        self.event = Some((Draft::new(), [false; 4]));
                    }
                    3 => {
                        let Some(field) = Field::named(local(name)) else {
                            return format(format!("Unexpected element <{name}> in an <Event>."));
                        };
                        let Some((_, given)) = self.event.as_mut() else {
                            return format(format!("<{name}> must be inside an <Event>."));
                        };
                        if std::mem::replace(&mut given[field as usize], true) {
                            return format(format!("<{}> is given twice in one <Event>.", field.name()));
                        }
                        let open = Open {
                            field,
                            content_start,
                            has_elements: false,
                            text: String::new(),
                            kept: None,
                        };
                        self.open = Some(open);
                    }
                    depth if depth > 3 => {
                        if let Some(open) = self.open.as_mut() {
                            if matches!(open.field, Field::EventId | Field::EventType) {
                                return format(format!(
                                    "<{}> must hold text, not <{name}>.",
                                    open.field.name()
                                ));
                            }
                            open.has_elements = true;
                        }
                    }
                    _ => return format(format!("Unexpected element <{name}>: expected <Event>.")),
                }
            }
            Node::End { content_end, .. } => {
                match self.depth {
                    3 => {
                        if let (Some(open), Some((draft, _))) = (self.open.take(), self.event.as_mut()) {
                            let field = open.field;
                            let payload = open.into_payload(document, content_end);
                            match field {
                                Field::EventId => draft.id = Some(super::payload_text(payload)),
                                Field::EventType => draft.event_type = Some(super::payload_text(payload)),
                                Field::Data => draft.data = payload,
                                Field::Metadata => draft.metadata = payload,
                            }
                        }
                    }
                    2 => self.drafts.extend(self.event.take().map(|(draft, _)| draft)),
                    _ => {}
                }
                self.depth -= 1;
            }
            Node::Text(text) | Node::CData(text) if self.depth < 3 => {
                if !text.trim().is_empty() {
                    return format(format!("Text outside the fields of an event: {:?}.", text.trim()));
                }
            }
            Node::Text(text) => self.push(&text, false),
            Node::CData(text) => self.push(&text, true),
        }
        Ok(())
    }

    /// Text of a field (text inside its markup stays in the markup).
    fn push(&mut self, text: &str, exact: bool) {
        if let Some(open) = self.open.as_mut().filter(|_| self.depth == 3) {
            open.push(text, exact);
        }
    }
}
