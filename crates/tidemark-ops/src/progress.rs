//! Progress of long work, reported to a sink the caller chooses.

/// Where long work reports how far it is. Every method has a default that
/// ignores it, so a sink implements what it shows.
pub trait Progress: Send {
    /// A phase begins: what it counts, and the total when it is known.
    fn begin(&mut self, _what: &str, _total: Option<u64>) {}
    /// How much of the phase is done (a count, not an increment).
    fn advance(&mut self, _done: u64) {}
    /// Something the operator should know that is not a result (a warning, a step).
    fn note(&mut self, _line: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Records everything (for tests).
#[derive(Debug, Default, Clone)]
pub struct Recording {
    pub phases: Vec<(String, Option<u64>)>,
    pub last: u64,
    pub notes: Vec<String>,
}

impl Progress for Recording {
    fn begin(&mut self, what: &str, total: Option<u64>) {
        self.phases.push((what.to_owned(), total));
    }

    fn advance(&mut self, done: u64) {
        self.last = done;
    }

    fn note(&mut self, line: &str) {
        self.notes.push(line.to_owned());
    }
}
