//! Galley's schedule (five-field cron, UTC, as `local` evaluates it) in EventBridge
//! Scheduler's `cron(minutes hours day-of-month month day-of-week year)` syntax.
//!
//! The two dialects differ where a literal copy would fire on the wrong days: AWS numbers
//! weekdays 1-7 from Sunday (classic cron 0-6, 7 also Sunday), needs `?` in one of the two day
//! fields, and documents `0/N` rather than `*/N` for steps. Weekdays are therefore written as
//! names (`MON-FRI`), which both dialects read the same way. A schedule restricted by both
//! day-of-month and weekday (classic cron fires on either) has no AWS equivalent and is refused
//! by validate, as are weekday forms with no common meaning (`L`, `#`).

/// `expr` (five fields) as an EventBridge Scheduler expression, or why it has none.
pub fn aws_cron(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else {
        return Err(format!("`{expr}` has {} fields; use five (minute hour day-of-month month day-of-week)", fields.len()));
    };
    let minute = steps_from(minute, 0);
    let hour = steps_from(hour, 0);
    let month = steps_from(&month.to_ascii_uppercase(), 1);
    let dom_field = steps_from(dom, 1);
    let days = weekdays(dow)?;
    let (dom, dow) = match (dom == "*", days) {
        (true, None) => ("*".to_owned(), "?".to_owned()),
        (true, Some(days)) => ("?".to_owned(), days),
        (false, None) => (dom_field, "?".to_owned()),
        (false, Some(_)) => {
            return Err(format!(
                "`{expr}` restricts both the day of the month and the weekday (cron fires on either); EventBridge Scheduler takes one of them: set the other to `*`"
            ));
        }
    };
    Ok(format!("cron({minute} {hour} {dom} {month} {dow} *)"))
}

/// `*/N` (and `*/N` inside a list) as `FIRST/N`, the form AWS documents.
fn steps_from(field: &str, first: u32) -> String {
    field.split(',').map(|part| match part.strip_prefix("*/") {
        Some(step) => format!("{first}/{step}"),
        None => part.to_owned(),
    }).collect::<Vec<_>>().join(",")
}

const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The weekdays of a classic day-of-week field, as AWS names (`None`: every day).
fn weekdays(field: &str) -> Result<Option<String>, String> {
    if field == "*" || field == "?" {
        return Ok(None);
    }
    let day = |s: &str| -> Result<usize, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = NAMES.iter().position(|n| *n == upper) {
            return Ok(i);
        }
        match s.parse::<usize>() {
            Ok(n @ 0..=7) => Ok(n % 7),
            _ => Err(format!("`{s}` is not a weekday in `{field}`: use 0-7 (0 and 7 are Sunday) or SUN-SAT")),
        }
    };
    let mut set = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<usize>().ok().filter(|s| *s > 0).ok_or_else(|| format!("`{part}`: the step must be a positive number"))?),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    // 7 ends a range as Sunday after Saturday (`5-7` is FRI,SAT,SUN).
                    let (a, b) = (day(a)?, if b == "7" { 7 } else { day(b)? });
                    if a > b {
                        return Err(format!("`{part}`: the range runs backwards; write it as a list"));
                    }
                    (a, b)
                }
                None if r.contains(['L', '#', 'l']) => {
                    return Err(format!("`{part}`: `L` and `#` weekdays mean different days on AWS; use plain weekdays"));
                }
                None => (day(r)?, if step > 1 { 6 } else { day(r)? }),
            },
        };
        for d in (from..=to).step_by(step) {
            set[d % 7] = true;
        }
    }
    if set.iter().all(|d| *d) {
        return Ok(None);
    }
    // Consecutive days as ranges, in AWS's Sunday-first order.
    let mut parts = Vec::new();
    let mut d = 0;
    while d < 7 {
        if !set[d] {
            d += 1;
            continue;
        }
        let start = d;
        while d + 1 < 7 && set[d + 1] {
            d += 1;
        }
        parts.push(match d - start {
            0 => NAMES[start].to_owned(),
            1 => format!("{},{}", NAMES[start], NAMES[d]),
            _ => format!("{}-{}", NAMES[start], NAMES[d]),
        });
        d += 1;
    }
    Ok(Some(parts.join(",")))
}

#[cfg(test)]
mod tests {
    use super::aws_cron;

    #[test]
    fn classic_schedules_become_aws_cron() {
        for (classic, aws) in [
            ("0 3 * * *", "cron(0 3 * * ? *)"),
            ("30 3 * * 1", "cron(30 3 ? * MON *)"),
            ("0 9 * * 1-5", "cron(0 9 ? * MON-FRI *)"),
            ("0 9 * * 0", "cron(0 9 ? * SUN *)"),
            ("0 9 * * 7", "cron(0 9 ? * SUN *)"),
            ("0 9 * * 5-7", "cron(0 9 ? * SUN,FRI,SAT *)"),
            ("0 9 * * sat,sun", "cron(0 9 ? * SUN,SAT *)"),
            ("0 9 * * */2", "cron(0 9 ? * SUN,TUE,THU,SAT *)"),
            ("0 9 * * 0-6", "cron(0 9 * * ? *)"),
            ("*/15 */2 1 jan,jul *", "cron(0/15 0/2 1 JAN,JUL ? *)"),
            ("0 0 */10 * *", "cron(0 0 1/10 * ? *)"),
        ] {
            assert_eq!(aws_cron(classic).as_deref(), Ok(aws), "{classic}");
        }
    }

    #[test]
    fn schedules_aws_cannot_express_are_refused_with_the_reason() {
        for (bad, says) in [
            ("0 3 1 * 1", "both the day of the month and the weekday"),
            ("0 3 * *", "has 4 fields"),
            ("0 3 * * 8", "not a weekday"),
            ("0 3 * * 5-1", "backwards"),
            ("0 3 * * 5L", "`L` and `#`"),
            ("0 3 * * 1/0", "positive"),
        ] {
            let e = aws_cron(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
