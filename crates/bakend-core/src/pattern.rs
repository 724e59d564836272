//! Event-type patterns: the one matcher behind realtime channels and function triggers.
//!
//! Names are dot-separated segments (`posts.created`, `system.collection.created`). A `*`
//! segment at the end of a pattern matches one or more remaining segments (`posts.*` matches
//! `posts.created` and `posts.x.y`, not `posts`). The two users differ in one documented way,
//! chosen by [`Wildcards`]: realtime channels follow Bakend v1, where `*` is a wildcard *only*
//! as that final segment (`posts.*.created` is a literal name), while trigger patterns also
//! let `*` stand for any one segment anywhere (`*.created`) and `*` alone match everything.

/// Where `*` is a wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wildcards {
    /// Only as the final segment after at least one other (`posts.*`): realtime channels.
    FinalOnly,
    /// As any whole segment, and `*` alone matches every name: function triggers.
    AnySegment,
}

/// Whether `pattern` matches the event type (or channel) `name`. Case-sensitive; allocates
/// nothing.
pub fn matches(pattern: &str, name: &str, wildcards: Wildcards) -> bool {
    let mut p = pattern.split('.').peekable();
    let mut n = name.split('.');
    let mut first = true;
    while let Some(ps) = p.next() {
        let last = p.peek().is_none();
        let wild = ps == "*"
            && match wildcards {
                Wildcards::FinalOnly => last && !first,
                Wildcards::AnySegment => true,
            };
        let Some(ns) = n.next() else {
            return false;
        };
        if wild && last {
            return true; // and whatever segments follow `ns`
        }
        if !wild && ps != ns {
            return false;
        }
        first = false;
    }
    n.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::Wildcards::{AnySegment, FinalOnly};
    use super::*;

    #[test]
    fn table() {
        // (pattern, name, channel (FinalOnly), trigger (AnySegment))
        let cases = [
            ("posts.created", "posts.created", true, true),
            ("posts.created", "posts.updated", false, false),
            ("posts.*", "posts.created", true, true),
            ("posts.*", "posts.x.y", true, true),
            ("posts.*", "posts", false, false),
            ("posts.*", "posts_archive.created", false, false),
            ("posts.*", "users.deleted", false, false),
            ("system.*", "system.collection.created", true, true),
            (
                "system.collection.*",
                "system.collection.created",
                true,
                true,
            ),
            ("posts.rec_1.*", "posts.rec_1.updated", true, true),
            ("posts.rec_1.*", "posts.rec_2.updated", false, false),
            ("*.created", "users.created", false, true),
            ("*.created", "*.created", true, true),
            ("posts.*.created", "posts.rec_1.created", false, true),
            ("posts.*.created", "posts.*.created", true, true),
            ("posts.*.created", "posts.rec_1.updated", false, false),
            ("*", "anything.at.all", false, true),
            ("*", "*", true, true),
            ("Posts.*", "posts.created", false, false),
            ("posts", "posts.created", false, false),
            ("posts.created.x", "posts.created", false, false),
            ("c*d", "cd", false, false),
        ];
        for (pattern, name, channel, trigger) in cases {
            assert_eq!(
                matches(pattern, name, FinalOnly),
                channel,
                "channel {pattern} vs {name}"
            );
            assert_eq!(
                matches(pattern, name, AnySegment),
                trigger,
                "trigger {pattern} vs {name}"
            );
        }
    }
}
