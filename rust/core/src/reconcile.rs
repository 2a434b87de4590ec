//! Reconciliation: every input row lands under exactly one reason, with its exact amount.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reason {
    Used,
    NullUser,
    NullTs,
    BadTs,
    TsOutOfRange,
    NullAmount,
    NanAmount,
    DuplicateUser,
    UnknownUser,
    NeverPaid,
    BeforeCohort,
    BeyondHorizon,
    BeforeSince,
    NotYetComplete,
}

pub const REASON_COUNT: usize = 14;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT] = [
        Reason::Used,
        Reason::NullUser,
        Reason::NullTs,
        Reason::BadTs,
        Reason::TsOutOfRange,
        Reason::NullAmount,
        Reason::NanAmount,
        Reason::DuplicateUser,
        Reason::UnknownUser,
        Reason::NeverPaid,
        Reason::BeforeCohort,
        Reason::BeyondHorizon,
        Reason::BeforeSince,
        Reason::NotYetComplete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Used => "used",
            Reason::NullUser => "null_user",
            Reason::NullTs => "null_ts",
            Reason::BadTs => "bad_ts",
            Reason::TsOutOfRange => "ts_out_of_range",
            Reason::NullAmount => "null_amount",
            Reason::NanAmount => "nan_amount",
            Reason::DuplicateUser => "duplicate_user",
            Reason::UnknownUser => "unknown_user",
            Reason::NeverPaid => "never_paid",
            Reason::BeforeCohort => "before_cohort",
            Reason::BeyondHorizon => "beyond_horizon",
            Reason::BeforeSince => "before_since",
            Reason::NotYetComplete => "not_yet_complete",
        }
    }

    /// Reasons that mean the input itself was bad (these warn, or raise under `strict`).
    pub fn is_bad_data(self) -> bool {
        matches!(self, Reason::NullUser | Reason::NullTs | Reason::BadTs | Reason::TsOutOfRange | Reason::NullAmount | Reason::NanAmount)
    }
}

/// Row counts and exact amounts per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    rows: [u64; REASON_COUNT],
    amount: [i128; REASON_COUNT],
}

impl Tally {
    #[inline]
    pub fn add(&mut self, reason: Reason, amount: i64) {
        self.rows[reason as usize] += 1;
        self.amount[reason as usize] += amount as i128;
    }

    pub fn add_many(&mut self, reason: Reason, rows: u64, amount: i128) {
        self.rows[reason as usize] += rows;
        self.amount[reason as usize] += amount;
    }

    pub fn set(&mut self, reason: Reason, rows: u64, amount: i128) {
        self.rows[reason as usize] = rows;
        self.amount[reason as usize] = amount;
    }

    pub fn merge(&mut self, other: &Tally) {
        for i in 0..REASON_COUNT {
            self.rows[i] += other.rows[i];
            self.amount[i] += other.amount[i];
        }
    }

    pub fn rows(&self, reason: Reason) -> u64 {
        self.rows[reason as usize]
    }

    pub fn amount(&self, reason: Reason) -> i128 {
        self.amount[reason as usize]
    }

    pub fn total_rows(&self) -> u64 {
        self.rows.iter().sum()
    }

    pub fn total_amount(&self) -> i128 {
        self.amount.iter().sum()
    }

    pub fn bad_rows(&self) -> u64 {
        Reason::ALL.iter().filter(|r| r.is_bad_data()).map(|&r| self.rows(r)).sum()
    }

    /// The listed reasons, in order, with their rows and amounts (zeros included).
    pub fn lines(&self, reasons: &[Reason]) -> Vec<(Reason, u64, i128)> {
        reasons.iter().map(|&r| (r, self.rows(r), self.amount(r))).collect()
    }
}
