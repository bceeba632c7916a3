//! XML 1.0 as eventfeed takes it in and gives it out: which characters
//! and names XML allows, and a walk through a document that refuses what
//! is not well-formed and hands each piece to the caller. The events
//! parser reads `…events+xml` bodies with it, an XML single-event body is
//! checked with it, and the `text/xml` view of an event decides with it
//! whether stored data is a document to show as it is.
//!
//! Stricter than quick-xml alone: every character must be one XML 1.0
//! allows (no NUL, raw or as `&#0;`), references are the five predefined
//! entities or characters XML allows, a DTD is refused (so no entity is
//! ever defined, and none expands), element and attribute names must be
//! XML names, and nothing but comments, processing instructions and
//! whitespace may stand beside the one root element.

use std::borrow::Cow;
use std::fmt;

use quick_xml::Reader;
use quick_xml::escape::unescape;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, Event};

/// Why a document is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotWellFormed(pub String);

impl fmt::Display for NotWellFormed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A piece of a well-formed document, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    /// A start tag (or an empty element, followed by its `End`), and the
    /// byte offset where its content starts.
    Start { name: &'a str, content_start: usize },
    /// An end tag, and the byte offset where the element's content ends.
    End { name: &'a str, content_end: usize },
    /// Character data, references resolved and line ends normalised.
    Text(Cow<'a, str>),
    /// A CDATA section's content, exactly (line ends normalised).
    CData(Cow<'a, str>),
}

/// Whether XML 1.0 allows `c` in a document (its `Char` production).
pub fn is_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Whether `c` may start an XML name (`NameStartChar`, without the `:`
/// that namespaces reserve).
pub fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}' | '\u{f8}'..='\u{2ff}'
        | '\u{370}'..='\u{37d}' | '\u{37f}'..='\u{1fff}' | '\u{200c}'..='\u{200d}' | '\u{2070}'..='\u{218f}'
        | '\u{2c00}'..='\u{2fef}' | '\u{3001}'..='\u{d7ff}' | '\u{f900}'..='\u{fdcf}' | '\u{fdf0}'..='\u{fffd}'
        | '\u{10000}'..='\u{effff}')
}

/// Whether `c` may follow in an XML name (`NameChar`, without `:`).
pub fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{b7}' | '\u{300}'..='\u{36f}' | '\u{203f}'..='\u{2040}')
}

/// Whether `name` is an XML name, prefixed (`ns:local`) or not.
fn is_name(name: &str) -> bool {
    let mut parts = name.split(':');
    let valid = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
    };
    parts.next().is_some_and(valid) && parts.next().is_none_or(valid) && parts.next().is_none()
}

/// Checks that `text` is one well-formed XML document.
pub fn check_document(text: &str) -> Result<(), NotWellFormed> {
    walk(text, |_| Ok::<(), NotWellFormed>(()))
}

fn refuse<T, E: From<NotWellFormed>>(message: String) -> Result<T, E> {
    Err(NotWellFormed(message).into())
}

/// Walks `document`, handing each piece to `visit` in order; stops at the
/// first thing that is not well-formed, or at `visit`'s first error.
pub fn walk<E: From<NotWellFormed>>(
    document: &str,
    mut visit: impl FnMut(Node<'_>) -> Result<(), E>,
) -> Result<(), E> {
    if let Some((at, c)) = document.char_indices().find(|&(_, c)| !is_char(c)) {
        return refuse(format!("the character U+{:04X} at byte {at} is not allowed in XML", u32::from(c)));
    }
    let mut reader = Reader::from_str(document);
    reader.config_mut().check_comments = true;
    let (mut depth, mut roots) = (0usize, 0usize);
    let offset = |position: u64| usize::try_from(position).unwrap_or(usize::MAX);
    loop {
        let before = offset(reader.buffer_position());
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(error) => return refuse(format!("{error} (at byte {})", reader.error_position())),
        };
        let after = offset(reader.buffer_position());
        match event {
            Event::Decl(decl) => {
                if before != 0 {
                    return refuse(format!("an XML declaration must start the document (at byte {before})"));
                }
                check_declaration(&decl)?;
            }
            Event::DocType(_) => {
                return refuse("a DTD (<!DOCTYPE …>) is not accepted: no entity can be defined".to_owned());
            }
            Event::PI(instruction) => {
                if instruction.target().eq_ignore_ascii_case("xml") || !is_name(instruction.target()) {
                    return refuse(format!("a bad processing instruction at byte {before}"));
                }
            }
            Event::Comment(_) => {}
            Event::Start(start) | Event::Empty(start) if depth == 0 && roots > 0 => {
                let name = start.name().into_inner();
                return refuse(format!("<{name}> after the root element (at byte {before})"));
            }
            Event::Start(start) => {
                roots += usize::from(depth == 0);
                depth += 1;
                visit(Node::Start { name: checked_tag(&start)?, content_start: after })?;
            }
            Event::Empty(start) => {
                roots += usize::from(depth == 0);
                let name = checked_tag(&start)?;
                visit(Node::Start { name, content_start: after })?;
                visit(Node::End { name, content_end: after })?;
            }
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                visit(Node::End { name: end.name().into_inner(), content_end: before })?;
            }
            Event::Text(text) if depth == 0 => {
                let outside = text.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{feff}');
                if !outside.is_empty() {
                    return refuse(format!("text outside the root element (at byte {before})"));
                }
            }
            Event::Text(text) => {
                if text.contains("]]>") {
                    return refuse(format!("']]>' in text (at byte {before})"));
                }
                visit(Node::Text(text.xml10_content()))?;
            }
            Event::CData(_) | Event::GeneralRef(_) if depth == 0 => {
                return refuse(format!("content outside the root element (at byte {before})"));
            }
            Event::CData(data) => visit(Node::CData(data.xml10_content()))?,
            Event::GeneralRef(reference) => visit(Node::Text(Cow::Owned(resolved(&reference)?.to_string())))?,
            Event::Eof if depth > 0 => return refuse("the document ends inside an element".to_owned()),
            Event::Eof if roots == 0 => return refuse("there is no root element".to_owned()),
            Event::Eof => return Ok(()),
        }
    }
}

/// Checks an XML declaration: `version="1.x"` first, then optionally
/// `encoding` (UTF-8, the one eventfeed reads) and `standalone` (`yes` or
/// `no`), in that order, as XML 1.0's `XMLDecl` has them.
fn check_declaration(decl: &BytesDecl<'_>) -> Result<(), NotWellFormed> {
    let bad = |problem: String| NotWellFormed(format!("the XML declaration: {problem}"));
    let content = BytesStart::from_content(&**decl, 3);
    let mut names = ["version", "encoding", "standalone"].into_iter();
    let mut versioned = false;
    for attribute in content.attributes() {
        let attribute = attribute.map_err(|error| bad(error.to_string()))?;
        let key = attribute.key.into_inner();
        if !names.any(|name| name == key) || versioned == (key == "version") {
            return Err(bad(format!("'{key}' is unknown or out of place")));
        }
        versioned = true;
        let value = &*attribute.value;
        let valid = match key {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())),
            "encoding" => value.eq_ignore_ascii_case("utf-8"),
            _ => matches!(value, "yes" | "no"),
        };
        if !valid {
            return Err(bad(format!(
                "{key}=\"{value}\" (accepted: version 1.x, encoding UTF-8, standalone yes or no)"
            )));
        }
    }
    if !versioned {
        return Err(bad("it gives no version".to_owned()));
    }
    Ok(())
}

/// A start tag's name, once it and its attributes are checked.
fn checked_tag<'s>(start: &'s BytesStart<'_>) -> Result<&'s str, NotWellFormed> {
    let name = start.name().into_inner();
    if !is_name(name) {
        return Err(NotWellFormed(format!("<{name}> is not an XML name")));
    }
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| NotWellFormed(format!("in <{name}>: {error}")))?;
        let key = attribute.key.into_inner();
        let bad = |problem: &str| NotWellFormed(format!("in <{name}>, attribute {key}: {problem}"));
        if !is_name(key) {
            return Err(bad("not an XML name"));
        }
        if attribute.value.contains('<') {
            return Err(bad("'<' in its value"));
        }
        let value = unescape(&attribute.value).map_err(|error| bad(&error.to_string()))?;
        if !value.chars().all(is_char) {
            return Err(bad("a character reference XML does not allow"));
        }
    }
    Ok(name)
}

/// The character a reference stands for: one of the five entities XML
/// predefines, or a character reference to a character XML allows.
fn resolved(reference: &BytesRef<'_>) -> Result<char, NotWellFormed> {
    let name: &str = reference;
    let character = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => reference.resolve_char_ref().ok().flatten(),
    };
    match character {
        Some(character) if is_char(character) => Ok(character),
        Some(_) => Err(NotWellFormed(format!("&{name}; is a character XML does not allow"))),
        None => Err(NotWellFormed(format!("&{name}; is not a defined entity or a character reference"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> String {
        check_document(text).expect_err(text).0
    }

    #[test]
    fn well_formed_documents_pass() {
        for text in [
            "<a/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c --><a x='1' y=\"&amp;&#x41;\"><b>t &lt; &#233;</b><![CDATA[<x>]]></a>\n",
            "\u{feff}<a/>",
            "<?xml version='1.1' standalone='no'?><a/>",
            "<ns:a xmlns:ns=\"u\"><?pi data?></ns:a>",
        ] {
            assert_eq!(check_document(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn what_is_not_well_formed_is_refused_with_a_reason() {
        for (text, expected) in [
            ("<a/>junk", "outside the root"),
            ("<a/><b/>", "after the root"),
            ("<a>\u{0}</a>", "U+0000"),
            ("<a>\u{ffff}</a>", "U+FFFF"),
            ("<a>&#0;</a>", "&#0;"),
            ("<a>&#x1;</a>", "&#x1;"),
            ("<a>&nbsp;</a>", "&nbsp;"),
            ("<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>", "DTD"),
            ("<a><b></a>", "b"),
            ("<a>", "ends inside"),
            ("", "no root"),
            ("<1a/>", "not an XML name"),
            ("<a b=\"1\" b=\"2\"/>", "b"),
            ("<a b=\"&#0;\"/>", "attribute b"),
            ("<a b=\"&x;\"/>", "attribute b"),
            ("<a>]]></a>", "]]>"),
            (" <?xml version=\"1.0\"?><a/>", "declaration"),
            ("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>", "UTF-8"),
            ("<a><!-- a -- b --></a>", ""),
            ("<?xml version=\"1&nbsp;.0\"?><a/>", "version"),
            ("<?xml encoding=\"utf-8\"?><a/>", "encoding"),
            ("<?xml?><a/>", "no version"),
            ("<?xml version=\"1.0\" standalone=\"maybe\"?><a/>", "standalone"),
            ("<?xml version=\"1.0\" standalone=\"yes\" encoding=\"utf-8\"?><a/>", "out of place"),
        ] {
            let problem = problem(text);
            assert!(problem.contains(expected), "{text}: {problem}");
        }
    }

    #[test]
    fn the_walk_hands_over_content_and_where_it_lies() {
        let text = "<a><b x='1'>t&amp;<![CDATA[<c>]]></b><d/></a>";
        let mut nodes = Vec::new();
        walk(text, |node| {
            nodes.push(format!("{node:?}"));
            Ok::<(), NotWellFormed>(())
        })
        .expect("well-formed");
        let expected = [
            r#"Start { name: "a", content_start: 3 }"#,
            r#"Start { name: "b", content_start: 12 }"#,
            r#"Text("t")"#,
            r#"Text("&")"#,
            r#"CData("<c>")"#,
            r#"End { name: "b", content_end: 33 }"#,
            r#"Start { name: "d", content_start: 41 }"#,
            r#"End { name: "d", content_end: 41 }"#,
            r#"End { name: "a", content_end: 41 }"#,
        ];
        assert_eq!(nodes, expected);
        assert_eq!(&text[12..33], "t&amp;<![CDATA[<c>]]>", "the content of <b>, exactly");
    }

    #[test]
    fn characters_and_names_follow_xml_1_0() {
        assert!(is_char('\t') && is_char('é') && is_char('\u{10000}') && is_char('\u{7f}'));
        assert!(!is_char('\u{0}') && !is_char('\u{1f}') && !is_char('\u{fffe}') && !is_char('\u{ffff}'));
        assert!(is_name("a") && is_name("_a-1.b") && is_name("ns:a") && is_name("é"));
        assert!(
            !is_name("1a") && !is_name("") && !is_name("a b") && !is_name("\u{aa}") && !is_name("x\u{b2}")
        );
        assert!(!is_name("a:b:c") && !is_name(":a"));
    }
}
