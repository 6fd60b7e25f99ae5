//! A tiny `tracing_subscriber` layer that records spans and events and
//! renders them as an indented tree — shared by the `tracing` example and
//! the test that pins the span tree.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

#[derive(Default)]
struct Node {
    name: String,
    fields: Vec<(String, String)>,
    parent: Option<usize>,
    /// Events and child spans, in order: `Err(text)` for an event,
    /// `Ok(index)` for a child span.
    children: Vec<Result<usize, String>>,
}

/// Records every span (with its fields, as last recorded) and event.
#[derive(Clone, Default)]
pub struct TreeLayer {
    nodes: Arc<Mutex<Vec<Node>>>,
    roots: Arc<Mutex<Vec<Result<usize, String>>>>,
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let value = format!("{value:?}");
        match self.0.iter_mut().find(|(name, _)| name == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.0.push((field.name().to_string(), value)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

/// The index of a span's node, kept in the span's extensions.
struct NodeIndex(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for TreeLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut node = Node { name: attrs.metadata().name().to_string(), ..Node::default() };
        attrs.record(&mut Fields(&mut node.fields));
        let span = ctx.span(id).expect("the span exists");
        node.parent = span.parent().and_then(|p| p.extensions().get::<NodeIndex>().map(|i| i.0));
        let mut nodes = self.nodes.lock().unwrap();
        let index = nodes.len();
        match node.parent {
            Some(parent) => nodes[parent].children.push(Ok(index)),
            None => self.roots.lock().unwrap().push(Ok(index)),
        }
        nodes.push(node);
        span.extensions_mut().insert(NodeIndex(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("the span exists");
        if let Some(index) = span.extensions().get::<NodeIndex>() {
            values.record(&mut Fields(&mut self.nodes.lock().unwrap()[index.0].fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.iter().find(|(k, _)| k == "message").map(|(_, v)| v.clone()).unwrap_or_default();
        let mut text = format!("{} {message}", event.metadata().level());
        for (k, v) in fields.iter().filter(|(k, _)| k != "message") {
            let _ = write!(text, " {k}={v}");
        }
        let parent = ctx.event_span(event).and_then(|s| s.extensions().get::<NodeIndex>().map(|i| i.0));
        match parent {
            Some(parent) => self.nodes.lock().unwrap()[parent].children.push(Err(text)),
            None => self.roots.lock().unwrap().push(Err(text)),
        }
    }
}

impl TreeLayer {
    /// The recorded spans and events as an indented tree.
    pub fn render(&self) -> String {
        let nodes = self.nodes.lock().unwrap();
        let mut out = String::new();
        fn walk(nodes: &[Node], item: &Result<usize, String>, depth: usize, out: &mut String) {
            let indent = "  ".repeat(depth);
            match item {
                Err(event) => {
                    let _ = writeln!(out, "{indent}{event}");
                }
                Ok(index) => {
                    let node = &nodes[*index];
                    let fields: Vec<String> = node.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(out, "{indent}{}{{{}}}", node.name, fields.join(" "));
                    for child in &node.children {
                        walk(nodes, child, depth + 1, out);
                    }
                }
            }
        }
        for root in self.roots.lock().unwrap().iter() {
            walk(&nodes, root, 0, &mut out);
        }
        out
    }
}
