//! Calendar periods in a time zone.
//!
//! Every timestamp maps to an absolute period index (months since 1970-01, ISO weeks since the week of
//! 1970-01-05, quarters since 1970Q1, days since 1970-01-01). Instants go through the zone's UTC
//! offset, looked up in a per-UTC-day table built once from the IANA database; wall-clock values
//! (naive timestamps, dates) are already local and need no zone at all.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::error::CoreError;

pub const SECONDS_PER_DAY: i64 = 86_400;

/// The supported range of local dates: 0001-01-01 ..= 9999-12-31 (days since 1970-01-01), the
/// range every consumer downstream (Python's `datetime.date`, Polars, Arrow's date32) can hold.
/// A timestamp whose local date falls outside it is a reconciliation reason, never a period.
pub const MIN_DAY: i64 = -719_162;
pub const MAX_DAY: i64 = 2_932_896;

/// Whether a local day is inside the supported range.
#[inline(always)]
pub fn day_in_range(day: i64) -> bool {
    (MIN_DAY..=MAX_DAY).contains(&day)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeriodKind {
    Day,
    Week,
    Month,
    Quarter,
}

impl PeriodKind {
    pub fn parse(name: &str) -> Result<Self, CoreError> {
        match name {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            "quarter" => Ok(Self::Quarter),
            other => Err(CoreError::InvalidArgument(format!(
                "period must be one of 'month', 'week', 'quarter', 'day'; got {other:?}"
            ))),
        }
    }

    /// Period index of a local civil day (days since 1970-01-01). Callers pass days in the
    /// supported range (`day_in_range`), where every index fits an `i32` with room to spare.
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)] // |day| ≤ 2.9M in range (debug-asserted)
    pub fn period_of_day(self, day: i64) -> i32 {
        debug_assert!(day_in_range(day), "day {day} outside the supported range");
        match self {
            Self::Day => day as i32,
            // 1970-01-05 (day 4) is the first Monday.
            Self::Week => (day - 4).div_euclid(7) as i32,
            Self::Month => month_index(day),
            Self::Quarter => month_index(day).div_euclid(3),
        }
    }

    /// First local day (days since 1970-01-01) of a period.
    pub fn first_day(self, period: i32) -> i64 {
        match self {
            Self::Day => period as i64,
            Self::Week => period as i64 * 7 + 4,
            Self::Month => first_day_of_month(period),
            Self::Quarter => first_day_of_month(period * 3),
        }
    }
}

/// Months since 1970-01 of a civil day, after Howard Hinnant's `civil_from_days`.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // months of an in-range day: |m| < 100k
fn month_index(day: i64) -> i32 {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // 1..=12
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    ((year - 1970) * 12 + month - 1) as i32
}

/// Days since 1970-01-01 of the first day of a month index, after `days_from_civil`.
fn first_day_of_month(month_idx: i32) -> i64 {
    let m0 = month_idx as i64;
    let year = 1970 + m0.div_euclid(12);
    let month = m0.rem_euclid(12) + 1;
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5; // day 1 of the month
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC offset of one UTC day: the offset at its start, and where it changes inside the day.
#[derive(Clone, Copy)]
struct DayOffset {
    start: i32,
    /// Seconds after the day's start at which `after` takes over; `SECONDS_PER_DAY` if never.
    change_at: i32,
    after: i32,
    /// More than one transition inside the day: ask the database.
    several: bool,
}

/// `DayOffset::change_at` of a day without a transition.
const NEVER_IN_THE_DAY: i32 = 86_400;

/// Offset table for instants between these years; outside it every lookup asks jiff directly.
const TABLE_FIRST_DAY: i64 = -25_567; // 1900-01-01
const TABLE_DAYS: usize = 73_049; // up to 2100-01-01

pub struct Calendar {
    pub kind: PeriodKind,
    tz: TimeZone,
    fixed_offset: Option<i32>,
    table: Vec<DayOffset>,
    /// Period of each local day in the table's range: a load instead of calendar arithmetic.
    day_period: Vec<i32>,
}

impl Calendar {
    pub fn new(kind: PeriodKind, tz_name: &str) -> Result<Self, CoreError> {
        let tz = TimeZone::get(tz_name).map_err(|e| {
            CoreError::InvalidArgument(format!("unknown time zone {tz_name:?}: {e}"))
        })?;
        let fixed_offset = if tz_name == "UTC" || tz_name == "Etc/UTC" {
            Some(0)
        } else {
            None
        };
        let day_period = (0..TABLE_DAYS as i64).map(|d| kind.period_of_day(TABLE_FIRST_DAY + d)).collect();
        let mut cal = Calendar { kind, tz, fixed_offset, table: Vec::new(), day_period };
        if cal.fixed_offset.is_none() {
            cal.table = cal.build_table();
        }
        Ok(cal)
    }

    fn build_table(&self) -> Vec<DayOffset> {
        let mut table = Vec::with_capacity(TABLE_DAYS);
        let first = TABLE_FIRST_DAY * SECONDS_PER_DAY;
        let last = first + TABLE_DAYS as i64 * SECONDS_PER_DAY;
        // All transitions in the range, in order.
        let mut transitions: Vec<(i64, i32)> = Vec::new();
        let start_ts = Timestamp::from_second(first - 1).expect("in range");
        for t in self.tz.following(start_ts) {
            let at = t.timestamp().as_second();
            if at >= last {
                break;
            }
            transitions.push((at, t.offset().seconds()));
        }
        let mut next = 0usize;
        let mut current = self.offset_slow(first);
        for d in 0..TABLE_DAYS as i64 {
            let day_start = first + d * SECONDS_PER_DAY;
            let day_end = day_start + SECONDS_PER_DAY;
            while next < transitions.len() && transitions[next].0 <= day_start {
                current = transitions[next].1;
                next += 1;
            }
            let start = current;
            let mut entry = DayOffset { start, change_at: NEVER_IN_THE_DAY, after: start, several: false };
            let mut k = next;
            while k < transitions.len() && transitions[k].0 < day_end {
                if k == next {
                    entry.change_at = i32::try_from(transitions[k].0 - day_start).unwrap_or(NEVER_IN_THE_DAY);
                    entry.after = transitions[k].1;
                } else {
                    entry.several = true;
                }
                k += 1;
            }
            table.push(entry);
        }
        table
    }

    fn offset_slow(&self, second: i64) -> i32 {
        match Timestamp::from_second(second) {
            Ok(ts) => self.tz.to_offset(ts).seconds(),
            Err(_) => self.tz.to_offset(if second < 0 { Timestamp::MIN } else { Timestamp::MAX }).seconds(),
        }
    }

    /// The run's time zone (text timestamps without an offset are wall-clock times in it).
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Whether local time is UTC (a zero offset at every instant).
    pub fn is_utc(&self) -> bool {
        self.fixed_offset == Some(0)
    }

    /// UTC offset in seconds at an instant (seconds since the epoch).
    #[inline(always)]
    pub fn offset_at(&self, second: i64) -> i32 {
        if let Some(off) = self.fixed_offset {
            return off;
        }
        let day = second.div_euclid(SECONDS_PER_DAY);
        let idx = day - TABLE_FIRST_DAY;
        if let Some(&e) = usize::try_from(idx).ok().and_then(|i| self.table.get(i)) {
            if e.several {
                return self.offset_slow(second);
            }
            #[allow(clippy::cast_possible_truncation)] // seconds into the day: 0..86_400
            let within = (second - day * SECONDS_PER_DAY) as i32;
            if within < e.change_at {
                e.start
            } else {
                e.after
            }
        } else {
            self.offset_slow(second)
        }
    }

    /// Local civil day (days since 1970-01-01) holding an instant.
    #[inline(always)]
    pub fn local_day_of_instant(&self, second: i64) -> i64 {
        (second + self.offset_at(second) as i64).div_euclid(SECONDS_PER_DAY)
    }

    /// Period holding a local civil day.
    #[inline(always)]
    pub fn period_of_day(&self, day: i64) -> i32 {
        match usize::try_from(day - TABLE_FIRST_DAY).ok().and_then(|i| self.day_period.get(i)) {
            Some(&p) => p,
            None => self.kind.period_of_day(day),
        }
    }

    #[inline(always)]
    pub fn period_of_instant(&self, second: i64) -> i32 {
        self.period_of_day(self.local_day_of_instant(second))
    }

    #[inline(always)]
    pub fn period_of_local_second(&self, local_second: i64) -> i32 {
        self.period_of_day(local_second.div_euclid(SECONDS_PER_DAY))
    }

    /// Start of a period as a local civil day.
    pub fn first_day(&self, period: i32) -> i64 {
        self.kind.first_day(period)
    }

    /// Period index holding an instant given in microseconds since the epoch.
    pub fn period_of_instant_micros(&self, micros: i64) -> i32 {
        self.period_of_instant(micros.div_euclid(1_000_000))
    }

    /// Period index holding a wall-clock time given in microseconds since 1970-01-01T00:00 local.
    pub fn period_of_local_micros(&self, micros: i64) -> i32 {
        self.period_of_local_second(micros.div_euclid(1_000_000))
    }

    /// First period starting at or after an instant (for `since`).
    pub fn first_period_starting_at_or_after_instant(&self, micros: i64) -> i32 {
        let p = self.period_of_instant_micros(micros);
        if self.period_start_instant_micros(p) == micros {
            p
        } else {
            p + 1
        }
    }

    /// First period starting at or after a wall-clock time.
    pub fn first_period_starting_at_or_after_local(&self, micros: i64) -> i32 {
        let p = self.period_of_local_micros(micros);
        if self.first_day(p) * SECONDS_PER_DAY * 1_000_000 == micros {
            p
        } else {
            p + 1
        }
    }

    /// The instant a period starts (its first local day's first instant), in microseconds.
    pub fn period_start_instant_micros(&self, period: i32) -> i64 {
        let day = self.first_day(period);
        match civil_date(day).and_then(|d| d.to_zoned(self.tz.clone()).ok()) {
            // `to_zoned` on a date gives the first instant of that day, even when midnight was skipped.
            Some(z) => z.timestamp().as_microsecond(),
            // Past jiff's last instant (9999-12-30T22:00Z, so that every offset can show it), as on
            // 9999-12-31 east of UTC: local midnight at the zone's last offset.
            None => {
                let midnight = day * SECONDS_PER_DAY;
                (midnight - i64::from(self.offset_slow(midnight))) * 1_000_000
            }
        }
    }
}

fn civil_date(day: i64) -> Option<jiff::civil::Date> {
    let epoch = jiff::civil::date(1970, 1, 1);
    epoch.checked_add(jiff::Span::new().days(day)).ok()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn day(y: i16, m: i8, d: i8) -> i64 {
        let date = jiff::civil::date(y, m, d);
        date.since(jiff::civil::date(1970, 1, 1)).unwrap().get_days() as i64
    }

    fn instant(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn month_round_trip_over_centuries() {
        for m in -12 * 200..12 * 300 {
            let first = first_day_of_month(m);
            assert_eq!(month_index(first), m);
            assert_eq!(month_index(first - 1), m - 1);
        }
        assert_eq!(month_index(day(2024, 2, 29)), (2024 - 1970) * 12 + 1);
        assert_eq!(first_day_of_month(0), 0);
    }

    #[test]
    fn day_table_matches_arithmetic() {
        for kind in [PeriodKind::Day, PeriodKind::Week, PeriodKind::Month, PeriodKind::Quarter] {
            let cal = Calendar::new(kind, "UTC").unwrap();
            for day in (TABLE_FIRST_DAY - 800..TABLE_FIRST_DAY + TABLE_DAYS as i64 + 800).step_by(7) {
                assert_eq!(cal.period_of_day(day), kind.period_of_day(day), "{kind:?} {day}");
            }
        }
    }

    #[test]
    fn weeks_start_on_monday() {
        let k = PeriodKind::Week;
        assert_eq!(k.period_of_day(day(1970, 1, 5)), 0);
        assert_eq!(k.period_of_day(day(1970, 1, 4)), -1);
        assert_eq!(k.period_of_day(day(1970, 1, 11)), 0);
        assert_eq!(k.first_day(k.period_of_day(day(2024, 7, 4))), day(2024, 7, 1));
    }

    #[test]
    fn quarters() {
        let k = PeriodKind::Quarter;
        assert_eq!(k.period_of_day(day(1970, 3, 31)), 0);
        assert_eq!(k.period_of_day(day(1970, 4, 1)), 1);
        assert_eq!(k.period_of_day(day(1969, 12, 31)), -1);
        assert_eq!(k.first_day(k.period_of_day(day(2024, 8, 15))), day(2024, 7, 1));
    }

    #[test]
    fn unknown_zone_and_period_are_errors() {
        assert!(Calendar::new(PeriodKind::Month, "Mars/Olympus").is_err());
        assert!(PeriodKind::parse("fortnight").is_err());
    }

    #[test]
    fn table_matches_the_database_everywhere() {
        for zone in ["America/Sao_Paulo", "Asia/Amman", "Pacific/Apia", "Europe/Berlin", "Asia/Kolkata"] {
            let cal = Calendar::new(PeriodKind::Day, zone).unwrap();
            let mut s = instant("1995-01-01T00:00:00Z");
            let end = instant("2030-01-01T00:00:00Z");
            while s < end {
                assert_eq!(cal.offset_at(s), cal.offset_slow(s), "{zone} at {s}");
                s += 3_517; // not a divisor of an hour: hits every minute offset over time
            }
        }
    }

    #[test]
    fn dst_edges() {
        // Sao Paulo 2015-10-18: midnight skipped, the day starts at 01:00 local (-02).
        let cal = Calendar::new(PeriodKind::Day, "America/Sao_Paulo").unwrap();
        assert_eq!(cal.local_day_of_instant(instant("2015-10-18T02:59:59Z")), day(2015, 10, 17));
        assert_eq!(cal.local_day_of_instant(instant("2015-10-18T03:00:00Z")), day(2015, 10, 18));
        assert_eq!(cal.period_start_instant_micros(day(2015, 10, 18) as i32), instant("2015-10-18T03:00:00Z") * 1_000_000);
        // Apia skipped 2011-12-30 entirely.
        let apia = Calendar::new(PeriodKind::Day, "Pacific/Apia").unwrap();
        assert_eq!(apia.local_day_of_instant(instant("2011-12-30T09:59:59Z")), day(2011, 12, 29));
        assert_eq!(apia.local_day_of_instant(instant("2011-12-30T10:00:00Z")), day(2011, 12, 31));
        // Amman 2021-10-29: clocks fall back from 01:00 to 00:00, the day still starts once.
        let amman = Calendar::new(PeriodKind::Month, "Asia/Amman").unwrap();
        assert_eq!(amman.period_of_instant(instant("2021-10-31T21:59:59Z")), (2021 - 1970) * 12 + 9);
        assert_eq!(amman.period_of_instant(instant("2021-10-31T22:00:00Z")), (2021 - 1970) * 12 + 10);
    }

    #[test]
    fn the_last_day_starts_at_local_midnight_east_of_utc() {
        // 9999-12-31 starts at 9999-12-30T23:00Z in Berlin, after jiff's last instant.
        let cal = Calendar::new(PeriodKind::Day, "Europe/Berlin").unwrap();
        let last = day(9999, 12, 31);
        let start = (last * SECONDS_PER_DAY - 3600) * 1_000_000;
        assert_eq!(cal.period_start_instant_micros(last as i32), start);
        assert_eq!(cal.first_period_starting_at_or_after_instant(start), last as i32);
    }

    #[test]
    fn since_rounds_up_to_a_whole_period() {
        let cal = Calendar::new(PeriodKind::Month, "Europe/Berlin").unwrap();
        let aug = (2024 - 1970) * 12 + 7;
        let mid_aug = instant("2024-08-15T00:00:00Z") * 1_000_000;
        assert_eq!(cal.first_period_starting_at_or_after_instant(mid_aug), aug + 1);
        let aug_start = instant("2024-07-31T22:00:00Z") * 1_000_000; // 00:00 in Berlin (CEST)
        assert_eq!(cal.first_period_starting_at_or_after_instant(aug_start), aug);
        assert_eq!(cal.first_period_starting_at_or_after_local(day(2024, 8, 1) * 86_400_000_000), aug);
        assert_eq!(cal.first_period_starting_at_or_after_local(day(2024, 8, 2) * 86_400_000_000), aug + 1);
    }
}
