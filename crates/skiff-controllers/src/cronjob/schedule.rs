//! Cron schedules as CronJobs use them (robfig/cron's standard parser): five fields
//! (minute, hour, day of month, month, day of week) of `*`, `?`, numbers, names (`JAN`,
//! `MON`), ranges, steps and lists, or a macro (`@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly`); and time zones (`UTC`, fixed offsets such as
//! `+05:30`, IANA names from the system database). Everything here is pure.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};

/// A schedule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five fields or a known macro.
    #[error("expected exactly 5 fields, found {0}: {1:?}")]
    Fields(usize, String),
    /// A field is malformed or out of range.
    #[error("bad {field} field {value:?}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Its text.
        value: String,
    },
    /// An unknown time zone.
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month or day of week is `*`/`?`: both must match, else either.
    day_star: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

fn value(f: &Field, s: &str) -> Option<u32> {
    if let Some(i) = f.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return u32::try_from(i).ok().map(|i| i + f.min);
    }
    s.parse::<u32>().ok()
}

/// Parses one field into a bit set and whether it starts with `*` or `?`.
fn field(f: &Field, text: &str) -> Result<(u64, bool), ScheduleError> {
    let bad = || ScheduleError::Field {
        field: f.name,
        value: text.to_string(),
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s.parse::<u32>().map_err(|_| bad())?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(f, a).ok_or_else(bad)?, value(f, b).ok_or_else(bad)?)
        } else {
            let v = value(f, range).ok_or_else(bad)?;
            (v, if step.is_some() { f.max } else { v })
        };
        // Day of week 7 is Sunday too.
        let (lo, hi) = if f.name == "day of week" && lo == 7 && hi == 7 {
            (0, 0)
        } else {
            (lo, hi)
        };
        let max = if f.name == "day of week" { 7 } else { f.max };
        let step = step.unwrap_or(1);
        if lo < f.min || hi > max || lo > hi || step == 0 {
            return Err(bad());
        }
        for v in (lo..=hi).step_by(usize::try_from(step).map_err(|_| bad())?) {
            bits |= 1 << (if max == 7 && v == 7 { 0 } else { v });
        }
    }
    Ok((bits, text.starts_with('*') || text.starts_with('?')))
}

impl Schedule {
    /// Parses a standard five-field schedule or a macro.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => text,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = parts[..] else {
            return Err(ScheduleError::Fields(parts.len(), text.to_string()));
        };
        let spec = |name, min, max, names| Field {
            name,
            min,
            max,
            names,
        };
        let (minutes, _) = field(&spec("minute", 0, 59, &[]), minute)?;
        let (hours, _) = field(&spec("hour", 0, 23, &[]), hour)?;
        let (days, day_star) = field(&spec("day of month", 1, 31, &[]), day)?;
        let (months, _) = field(&spec("month", 1, 12, &MONTHS), month)?;
        let (weekdays, weekday_star) = field(&spec("day of week", 0, 6, &WEEKDAYS), weekday)?;
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_star: day_star || weekday_star,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let bit = |set: u64, v: i8| u32::try_from(v).is_ok_and(|v| set & (1 << v) != 0);
        let dom = bit(self.days, date.day());
        let dow = bit(self.weekdays, date.weekday().to_sunday_zero_offset());
        bit(self.months, date.month())
            && if self.day_star {
                dom && dow
            } else {
                dom || dow
            }
    }

    /// The first scheduled time strictly after `after`, in `tz` (within five years).
    pub fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut date = local.date();
        for day in 0..(366 * 5) {
            if self.day_matches(date) {
                for hour in (0..24i8).filter(|h| self.hours & (1 << h) != 0) {
                    if day == 0 && hour < local.hour() {
                        continue;
                    }
                    for minute in (0..60i8).filter(|m| self.minutes & (1 << m) != 0) {
                        if day == 0 && hour == local.hour() && minute < local.minute() {
                            continue;
                        }
                        let zoned = tz
                            .to_ambiguous_zoned(date.at(hour, minute, 0, 0))
                            .compatible()
                            .ok()?;
                        if zoned.timestamp() > after {
                            return Some(zoned.timestamp());
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The latest scheduled time in `(after, now]` and how many there were; `None` when
    /// none is due.
    pub fn most_recent(
        &self,
        tz: &TimeZone,
        after: Timestamp,
        now: Timestamp,
    ) -> Option<(Timestamp, usize)> {
        let mut t = after;
        let mut last = None;
        let mut count = 0usize;
        let mut previous_gap = None;
        while let Some(next) = self.next_after(tz, t) {
            if next > now {
                break;
            }
            if let Some(prev) = last {
                previous_gap = Some(next.duration_since(prev));
            }
            last = Some(next);
            count += 1;
            t = next;
            // Many missed runs: skip ahead to near `now` (counts become approximate).
            if count > 100
                && let Some(gap) = previous_gap
                && let Ok(jump) = now.checked_sub(gap * 2)
                && jump > t
            {
                t = jump;
            }
        }
        last.map(|l| (l, count))
    }
}

/// Resolves a CronJob `timeZone`: unset or `UTC` is UTC; `+HH:MM`, `-HH:MM`, `UTC+HH:MM` are
/// fixed offsets; anything else is an IANA name looked up in the system database.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(TimeZone::UTC);
    };
    if name.eq_ignore_ascii_case("UTC") || name == "Etc/UTC" {
        return Ok(TimeZone::UTC);
    }
    let offset = name
        .strip_prefix("UTC")
        .or_else(|| name.strip_prefix("GMT"))
        .unwrap_or(name);
    if let Some(sign) = offset.chars().next().filter(|c| *c == '+' || *c == '-') {
        let (h, m) = offset[1..].split_once(':').unwrap_or((&offset[1..], "0"));
        let bad = || ScheduleError::TimeZone(name.to_string());
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 14 || m > 59 {
            return Err(bad());
        }
        let secs = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
        return Offset::from_seconds(secs)
            .map(TimeZone::fixed)
            .map_err(|_| bad());
    }
    TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
