//! What the writer tab tells the other tabs, in order, without holding the page's
//! thread: a batch's changes go out as JSON built a slice at a time, after the save that
//! produced them has returned, and a status message never overtakes the changes before it.

use futures::channel::mpsc;
use futures::StreamExt;
use nostr::prelude::Event;
use wasm_bindgen::JsValue;

use crate::clock::pace;

/// Events serialised between two looks at the clock.
const SLICE_EVENTS: usize = 64;

enum Post {
    /// Events added and removed by one save.
    Changes(Vec<Event>, Vec<Event>),
    /// A message ready to post (statuses).
    Ready(JsValue),
}

/// The writer's queue of messages to the other tabs; dropping it ends its task.
pub struct Outbox {
    queue: mpsc::UnboundedSender<Post>,
}

impl Outbox {
    /// Posts on `channel`, in the order queued, from a task of its own.
    pub fn new(channel: web_sys::BroadcastChannel) -> Self {
        let (queue, mut posts) = mpsc::unbounded::<Post>();
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(post) = posts.next().await {
                let message = match post {
                    Post::Changes(added, removed) => changes_message(&added, &removed).await,
                    Post::Ready(message) => message,
                };
                let _ = channel.post_message(&message);
            }
        });
        Self { queue }
    }

    /// Queues a save's changes.
    pub fn changes(&self, added: &[Event], removed: &[Event]) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let _ = self
            .queue
            .unbounded_send(Post::Changes(added.to_vec(), removed.to_vec()));
    }

    /// Queues a message built already.
    pub fn post(&self, message: JsValue) {
        let _ = self.queue.unbounded_send(Post::Ready(message));
    }
}

/// `{added: [json…], removed: [json…]}`, serialised a slice at a time.
async fn changes_message(added: &[Event], removed: &[Event]) -> JsValue {
    let message = js_sys::Object::new();
    for (name, events) in [("added", added), ("removed", removed)] {
        let list = js_sys::Array::new();
        for (i, e) in events.iter().enumerate() {
            if i % SLICE_EVENTS == SLICE_EVENTS - 1 {
                pace().await;
            }
            list.push(&e.as_json().into());
        }
        let _ = js_sys::Reflect::set(&message, &name.into(), &list);
    }
    message.into()
}
