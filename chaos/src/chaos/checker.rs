//! The checker: a pure function from a [`History`] to a [`CheckReport`].
//!
//! Every key is written once, by one PutVectors, with a value never used before, and deleted at
//! most once after its write was acknowledged. That makes each key's story short, and the rules
//! below exact rather than heuristic:
//!
//! - **lost**: the put was acknowledged, no delete of the key was attempted (or every attempt was
//!   refused), and the final read did not return it. A key whose final reads all failed counts as
//!   lost too: a user cannot get it back.
//! - **resurrected**: a delete of the key was acknowledged and the final read returned it.
//! - **phantom**: the final read (or any read) returned a key nobody tried to write, a value that
//!   was never written for it, or a key whose only put was refused; or a read returned a key
//!   before its put was invoked.
//! - **stale read**: a GetVectors that began after the key's put was acknowledged, while no delete
//!   of it had been attempted, and did not return it; or one that began after a delete of the key
//!   was acknowledged and returned it.
//! - **probe miss**: a QueryVectors with a key's own vector that began after its put was
//!   acknowledged, with no delete attempted, whose answers did not include the key.
//!
//! Besides violations it measures, per fault, the share of operations invoked during the fault
//! that succeeded (availability) and how long after the heal failures went on (recovery), and
//! the recall of the probes of the final phase.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::history::{FinalState, History, Op, OpKind, Outcome, Phase};

/// At most this many examples of each violation kind are kept in the report.
const EXAMPLES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub key: String,
    /// The operation that saw it, for read anomalies.
    pub op: Option<u64>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ViolationSet {
    pub count: usize,
    pub examples: Vec<Violation>,
}

impl ViolationSet {
    fn add(&mut self, key: &str, op: Option<u64>, detail: String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(Violation {
                key: key.to_owned(),
                op,
                detail,
            });
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

impl OpCounts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info => self.info += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }

    /// Share of operations that succeeded (1.0 when there were none).
    pub fn availability(&self) -> f64 {
        if self.total() == 0 {
            1.0
        } else {
            self.ok as f64 / self.total() as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultReport {
    pub kind: String,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Operations invoked while the fault was in place.
    pub ops: OpCounts,
    pub availability: f64,
    /// How long after the heal the last failed operation was invoked, among those invoked after
    /// the heal and ended before the next fault began; 0 when none failed.
    pub recovery_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub valid: bool,
    pub ops: BTreeMap<String, OpCounts>,
    pub keys_written: usize,
    pub acknowledged_writes: usize,
    pub acknowledged_deletes: usize,
    pub lost: ViolationSet,
    pub resurrected: ViolationSet,
    pub phantom: ViolationSet,
    pub stale_reads: ViolationSet,
    pub probe_misses: ViolationSet,
    /// Hits / probes of the final phase (a failed probe is a miss); `None` when there were none.
    pub final_recall: Option<f64>,
    pub min_final_recall: f64,
    pub faults: Vec<FaultReport>,
    /// Availability of the operations invoked while no fault was in place.
    pub availability_without_faults: f64,
}

impl CheckReport {
    /// `(name, count)` of every violation kind.
    pub fn violations(&self) -> [(&'static str, usize); 5] {
        [
            ("lost", self.lost.count),
            ("resurrected", self.resurrected.count),
            ("phantom", self.phantom.count),
            ("stale read", self.stale_reads.count),
            ("probe miss", self.probe_misses.count),
        ]
    }
}

/// The story of one key.
#[derive(Default)]
struct KeyStory<'a> {
    put: Option<(&'a Op, &'a str)>,
    /// Every delete attempt that was not refused.
    deletes: Vec<&'a Op>,
}

impl KeyStory<'_> {
    fn acknowledged_put_before(&self, t: u64) -> bool {
        self.put
            .is_some_and(|(op, _)| op.outcome == Outcome::Ok && op.complete_ms < t)
    }

    fn delete_attempted_before(&self, t: u64) -> bool {
        self.deletes.iter().any(|d| d.invoke_ms < t)
    }

    fn delete_acknowledged_before(&self, t: u64) -> bool {
        self.deletes
            .iter()
            .any(|d| d.outcome == Outcome::Ok && d.complete_ms < t)
    }
}

/// Checks a history. `min_final_recall` is the share of final-phase probes that must find their
/// key.
pub fn check(history: &History, min_final_recall: f64) -> CheckReport {
    let mut report = CheckReport {
        min_final_recall,
        ..CheckReport::default()
    };
    let mut stories: HashMap<&str, KeyStory> = HashMap::new();
    for op in &history.ops {
        report
            .ops
            .entry(format!("{:?}", op.kind).to_lowercase())
            .or_default()
            .add(op.outcome);
        match op.kind {
            OpKind::Put => {
                for (key, value) in &op.keys {
                    stories.entry(key).or_default().put = Some((op, value));
                }
            }
            OpKind::Delete if op.outcome != Outcome::Fail => {
                for (key, _) in &op.keys {
                    stories.entry(key).or_default().deletes.push(op);
                }
            }
            _ => {}
        }
    }
    report.keys_written = stories.values().filter(|s| s.put.is_some()).count();
    report.acknowledged_writes = stories
        .values()
        .filter(|s| s.put.is_some_and(|(op, _)| op.outcome == Outcome::Ok))
        .count();
    report.acknowledged_deletes = stories
        .values()
        .filter(|s| s.deletes.iter().any(|d| d.outcome == Outcome::Ok))
        .count();

    check_final_state(history, &stories, &mut report);
    // Final probes that failed count as misses: after the heal, queries must answer.
    let (mut probes, mut hits) = (0u64, 0u64);
    for op in &history.ops {
        let ok = op.outcome == Outcome::Ok;
        match op.kind {
            OpKind::Get if ok => check_get(op, &stories, &mut report),
            OpKind::Probe => {
                let hit = ok && check_probe(op, &stories, &mut report);
                if op.phase == Phase::Final {
                    probes += 1;
                    hits += u64::from(hit);
                }
            }
            OpKind::Get | OpKind::Put | OpKind::Delete => {}
        }
    }
    report.final_recall = (probes > 0).then(|| hits as f64 / probes as f64);
    report.faults = fault_reports(history);
    let mut quiet = OpCounts::default();
    for op in history
        .ops
        .iter()
        .filter(|op| op.phase == Phase::Workload)
        .filter(|op| {
            !history
                .faults
                .iter()
                .any(|f| (f.start_ms..=f.end_ms).contains(&op.invoke_ms))
        })
    {
        quiet.add(op.outcome);
    }
    report.availability_without_faults = quiet.availability();
    report.valid = report.violations().iter().all(|(_, n)| *n == 0)
        && report.final_recall.unwrap_or(1.0) >= min_final_recall;
    report
}

fn check_final_state(
    history: &History,
    stories: &HashMap<&str, KeyStory>,
    report: &mut CheckReport,
) {
    for (key, story) in stories {
        let Some((put, value)) = story.put else {
            continue;
        };
        let state = history
            .final_state
            .get(*key)
            .unwrap_or(&FinalState::Unreadable);
        let deleted = story.deletes.iter().any(|d| d.outcome == Outcome::Ok);
        match state {
            FinalState::Present(found) => {
                if found != value {
                    report.phantom.add(
                        key,
                        None,
                        format!("final read returned value {found:?}, written {value:?}"),
                    );
                } else if put.outcome == Outcome::Fail {
                    report.phantom.add(
                        key,
                        Some(put.id),
                        "present after its only put was refused".into(),
                    );
                } else if deleted {
                    report.resurrected.add(
                        key,
                        story.deletes.first().map(|d| d.id),
                        "present after an acknowledged delete".into(),
                    );
                }
            }
            FinalState::Absent | FinalState::Unreadable => {
                if put.outcome == Outcome::Ok && story.deletes.is_empty() {
                    report.lost.add(
                        key,
                        Some(put.id),
                        format!("acknowledged put, final read: {state:?}"),
                    );
                }
            }
        }
    }
    for (key, state) in &history.final_state {
        if matches!(state, FinalState::Present(_))
            && stories.get(key.as_str()).is_none_or(|s| s.put.is_none())
        {
            report
                .phantom
                .add(key, None, "present, but never written".into());
        }
    }
}

fn check_get(op: &Op, stories: &HashMap<&str, KeyStory>, report: &mut CheckReport) {
    let found: HashMap<&str, &str> = op
        .found
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (key, _) in &op.keys {
        let story = stories.get(key.as_str());
        match found.get(key.as_str()) {
            Some(value) => {
                let Some((put, written)) = story.and_then(|s| s.put) else {
                    report
                        .phantom
                        .add(key, Some(op.id), "read a key never written".into());
                    continue;
                };
                if put.invoke_ms > op.complete_ms {
                    report
                        .phantom
                        .add(key, Some(op.id), "read before its put was invoked".into());
                } else if value != &written {
                    report.phantom.add(
                        key,
                        Some(op.id),
                        format!("read value {value:?}, written {written:?}"),
                    );
                } else if story.is_some_and(|s| s.delete_acknowledged_before(op.invoke_ms)) {
                    report.stale_reads.add(
                        key,
                        Some(op.id),
                        "returned a key whose delete was acknowledged before the read began".into(),
                    );
                }
            }
            None => {
                if let Some(story) = story {
                    if story.acknowledged_put_before(op.invoke_ms)
                        && !story.delete_attempted_before(op.complete_ms)
                    {
                        report.stale_reads.add(
                            key,
                            Some(op.id),
                            "missed a key whose put was acknowledged before the read began".into(),
                        );
                    }
                }
            }
        }
    }
}

/// Returns whether the probe found its key (or was not expected to).
fn check_probe(op: &Op, stories: &HashMap<&str, KeyStory>, report: &mut CheckReport) -> bool {
    let Some((key, _)) = op.keys.first() else {
        return true;
    };
    let expected = stories.get(key.as_str()).is_some_and(|s| {
        s.acknowledged_put_before(op.invoke_ms) && !s.delete_attempted_before(op.complete_ms)
    });
    let hit = op.found.iter().any(|(k, _)| k == key);
    if expected && !hit {
        report.probe_misses.add(
            key,
            Some(op.id),
            format!(
                "query with the key's own vector answered {:?}",
                op.found.iter().map(|(k, _)| k).collect::<Vec<_>>()
            ),
        );
    }
    hit || !expected
}

fn fault_reports(history: &History) -> Vec<FaultReport> {
    let mut faults: Vec<_> = history.faults.iter().collect();
    faults.sort_by_key(|f| f.start_ms);
    faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let mut ops = OpCounts::default();
            let next = faults.get(i + 1).map_or(u64::MAX, |f| f.start_ms);
            let mut last_failure_after_heal = None;
            for op in history.ops.iter().filter(|op| op.phase == Phase::Workload) {
                if (fault.start_ms..=fault.end_ms).contains(&op.invoke_ms) {
                    ops.add(op.outcome);
                } else if op.invoke_ms > fault.end_ms
                    && op.complete_ms < next
                    && op.outcome != Outcome::Ok
                {
                    last_failure_after_heal = Some(op.invoke_ms);
                }
            }
            FaultReport {
                kind: fault.kind.clone(),
                target: fault.target.clone(),
                start_ms: fault.start_ms,
                end_ms: fault.end_ms,
                availability: ops.availability(),
                ops,
                recovery_ms: last_failure_after_heal.map_or(0, |t| t - fault.end_ms),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::history::Fault;
    use super::*;

    /// A small builder for hand-written histories.
    #[derive(Default)]
    struct H {
        history: History,
    }

    impl H {
        fn op(
            &mut self,
            kind: OpKind,
            keys: &[(&str, &str)],
            span: (u64, u64),
            outcome: Outcome,
            found: &[(&str, &str)],
        ) -> &mut Self {
            let id = self.history.ops.len() as u64;
            let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
                v.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            self.history.ops.push(Op {
                id,
                client: 0,
                coordinator: 0,
                kind,
                phase: Phase::Workload,
                keys: pairs(keys),
                invoke_ms: span.0,
                complete_ms: span.1,
                outcome,
                found: pairs(found),
                error: None,
            });
            self
        }
        fn put(&mut self, key: &str, value: &str, span: (u64, u64), outcome: Outcome) -> &mut Self {
            self.op(OpKind::Put, &[(key, value)], span, outcome, &[])
        }
        fn delete(&mut self, key: &str, span: (u64, u64), outcome: Outcome) -> &mut Self {
            self.op(OpKind::Delete, &[(key, "")], span, outcome, &[])
        }
        fn get(&mut self, key: &str, span: (u64, u64), found: Option<&str>) -> &mut Self {
            let found: Vec<(&str, &str)> = found.map(|v| (key, v)).into_iter().collect();
            self.op(OpKind::Get, &[(key, "")], span, Outcome::Ok, &found)
        }
        fn probe(&mut self, key: &str, span: (u64, u64), answers: &[&str]) -> &mut Self {
            let found: Vec<(&str, &str)> = answers.iter().map(|k| (*k, "")).collect();
            self.op(OpKind::Probe, &[(key, "")], span, Outcome::Ok, &found)
        }
        fn last_phase(&mut self, phase: Phase) -> &mut Self {
            self.history.ops.last_mut().unwrap().phase = phase;
            self
        }
        fn fin(&mut self, key: &str, state: FinalState) -> &mut Self {
            self.history.final_state.insert(key.into(), state);
            self
        }
        fn check(&self) -> CheckReport {
            check(&self.history, 1.0)
        }
    }

    fn present(v: &str) -> FinalState {
        FinalState::Present(v.into())
    }

    #[test]
    fn a_clean_history_is_valid() {
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .put("b", "2", (0, 10), Outcome::Info)
            .put("c", "3", (0, 10), Outcome::Fail)
            .put("d", "4", (0, 10), Outcome::Ok)
            .get("a", (11, 12), Some("1"))
            .get("b", (11, 12), None) // indeterminate put: either answer is fine
            .probe("a", (13, 14), &["a", "d"])
            .delete("d", (15, 20), Outcome::Ok)
            .get("d", (16, 18), Some("4")) // concurrent with the delete: either answer is fine
            .get("d", (21, 22), None)
            .fin("a", present("1"))
            .fin("b", present("2"))
            .fin("c", FinalState::Absent)
            .fin("d", FinalState::Absent)
            .check();
        assert!(report.valid, "{report:#?}");
        assert_eq!((report.keys_written, report.acknowledged_writes), (4, 2));
        assert_eq!(report.acknowledged_deletes, 1);
        assert_eq!(report.ops["put"].total(), 4);
    }

    #[test]
    fn an_acknowledged_write_missing_at_the_end_is_lost() {
        for state in [FinalState::Absent, FinalState::Unreadable] {
            let report = H::default()
                .put("a", "1", (0, 10), Outcome::Ok)
                .fin("a", state)
                .check();
            assert!(!report.valid);
            assert_eq!(report.lost.count, 1);
            assert_eq!(report.lost.examples[0].key, "a");
        }
        // Not lost when a delete was attempted, even one whose outcome is unknown.
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .delete("a", (11, 12), Outcome::Info)
            .fin("a", FinalState::Absent)
            .check();
        assert!(report.valid, "{report:#?}");
        // A refused delete does not excuse a missing key.
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .delete("a", (11, 12), Outcome::Fail)
            .fin("a", FinalState::Absent)
            .check();
        assert_eq!(report.lost.count, 1);
    }

    #[test]
    fn an_acknowledged_delete_that_comes_back_is_a_resurrection() {
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .delete("a", (11, 12), Outcome::Ok)
            .fin("a", present("1"))
            .check();
        assert!(!report.valid);
        assert_eq!(report.resurrected.count, 1);
        assert_eq!(report.lost.count, 0);
    }

    #[test]
    fn values_never_written_are_phantoms() {
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .put("b", "2", (0, 10), Outcome::Fail)
            .fin("a", present("other"))
            .fin("b", present("2"))
            .fin("zz", present("9"))
            .check();
        assert_eq!(report.phantom.count, 3, "{report:#?}");
        assert!(!report.valid);
        // A read that sees a key before its put was invoked, or a key never written.
        let report = H::default()
            .get("a", (0, 1), Some("1"))
            .put("a", "1", (5, 10), Outcome::Ok)
            .get("b", (11, 12), Some("2"))
            .fin("a", present("1"))
            .check();
        assert_eq!(report.phantom.count, 2, "{report:#?}");
    }

    #[test]
    fn reads_that_miss_acknowledged_writes_or_see_acknowledged_deletes_are_stale() {
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .get("a", (9, 12), None) // began before the ack: fine
            .get("a", (11, 12), None) // stale
            .delete("a", (20, 30), Outcome::Ok)
            .get("a", (25, 26), None) // concurrent with the delete: fine
            .get("a", (31, 32), Some("1")) // stale: sees an acknowledged delete
            .fin("a", FinalState::Absent)
            .check();
        assert_eq!(report.stale_reads.count, 2, "{report:#?}");
        assert_eq!(
            report
                .stale_reads
                .examples
                .iter()
                .map(|v| v.op)
                .collect::<Vec<_>>(),
            vec![Some(2), Some(5)]
        );
        assert!(!report.valid);
    }

    #[test]
    fn probes_must_find_acknowledged_keys() {
        let report = H::default()
            .put("a", "1", (0, 10), Outcome::Ok)
            .probe("a", (5, 11), &[]) // began before the ack
            .probe("a", (12, 13), &["b"]) // miss
            .fin("a", present("1"))
            .check();
        assert_eq!(report.probe_misses.count, 1);
        assert!(!report.valid);
    }

    #[test]
    fn final_recall_is_gated() {
        let mut h = H::default();
        h.put("a", "1", (0, 10), Outcome::Ok)
            .put("b", "2", (0, 10), Outcome::Ok)
            .probe("a", (20, 21), &["a"])
            .last_phase(Phase::Final)
            .probe("b", (20, 21), &["a"])
            .last_phase(Phase::Final)
            .fin("a", present("1"))
            .fin("b", present("2"));
        let report = check(&h.history, 0.5);
        assert_eq!(report.final_recall, Some(0.5));
        assert_eq!(report.probe_misses.count, 1);
        assert!(!report.valid);
        // A final probe that fails is a miss too: queries must answer after the heal.
        let mut h = H::default();
        h.put("a", "1", (0, 10), Outcome::Ok)
            .op(OpKind::Probe, &[("a", "")], (20, 21), Outcome::Info, &[])
            .last_phase(Phase::Final)
            .fin("a", present("1"));
        let report = check(&h.history, 0.99);
        assert_eq!(report.final_recall, Some(0.0));
        assert!(!report.valid);
    }

    #[test]
    fn availability_and_recovery_per_fault() {
        let mut h = H::default();
        h.put("a", "1", (0, 5), Outcome::Ok)
            .put("b", "2", (110, 120), Outcome::Info)
            .put("c", "3", (150, 160), Outcome::Ok)
            .put("d", "4", (150, 160), Outcome::Ok)
            .put("e", "5", (150, 160), Outcome::Fail)
            .put("f", "6", (230, 240), Outcome::Info)
            .put("h", "8", (790, 805), Outcome::Info) // ended after the next fault began
            .put("g", "7", (900, 910), Outcome::Info);
        h.history.faults.push(Fault {
            kind: "kill".into(),
            target: "node-1".into(),
            start_ms: 100,
            end_ms: 200,
        });
        h.history.faults.push(Fault {
            kind: "pause".into(),
            target: "node-2".into(),
            start_ms: 800,
            end_ms: 1000,
        });
        let report = check(&h.history, 1.0);
        let kill = &report.faults[0];
        assert_eq!(kill.ops.total(), 4);
        assert_eq!(kill.availability, 0.5);
        // "f" failed 30 ms after the heal; "h" ran into the next fault, "g" is in it.
        assert_eq!(kill.recovery_ms, 30);
        assert_eq!(report.faults[1].recovery_ms, 0);
        assert_eq!(report.faults[1].availability, 0.0);
        assert_eq!(report.availability_without_faults, 1.0 / 3.0);
    }
}
