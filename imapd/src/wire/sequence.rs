//! Sequence sets (RFC 3501 §9 `sequence-set`): `1:4,7,9:*`.

/// One end of a range: a number, or `*` (the largest number in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Num(u32),
    Star,
    /// RFC 5182 `seq-last-command` (`$`), only ever alone in a set: replaced by the saved
    /// result before a command runs (`Session::resolve_saved`); unresolved it matches nothing.
    Saved,
}

impl Bound {
    fn value(self, largest: u32) -> u32 {
        match self {
            Bound::Num(n) => n,
            Bound::Star => largest,
            Bound::Saved => 0,
        }
    }
}

/// A parsed set of ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet(pub Vec<(Bound, Bound)>);

/// At most this many ranges in one set (bounds work per command).
const MAX_RANGES: usize = 100_000;

impl SequenceSet {
    /// Parse `1:4,7,*`; numbers are non-zero (RFC 3501 `nz-number`).
    pub fn parse(raw: &[u8]) -> Option<SequenceSet> {
        let text = std::str::from_utf8(raw).ok()?;
        if text.is_empty() {
            return None;
        }
        // RFC 5182 §3: `sequence-set =/ seq-last-command`: `$` stands alone, never in a list.
        if text == "$" {
            return Some(SequenceSet::saved());
        }
        let bound = |s: &str| -> Option<Bound> {
            if s == "*" {
                return Some(Bound::Star);
            }
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match s.parse::<u32>().ok()? {
                0 => None,
                n => Some(Bound::Num(n)),
            }
        };
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let range = match item.split_once(':') {
                Some((a, b)) => (bound(a)?, bound(b)?),
                None => {
                    let b = bound(item)?;
                    (b, b)
                }
            };
            ranges.push(range);
            if ranges.len() > MAX_RANGES {
                return None;
            }
        }
        Some(SequenceSet(ranges))
    }

    /// `$`, the saved search result (RFC 5182).
    pub fn saved() -> SequenceSet {
        SequenceSet(vec![(Bound::Saved, Bound::Saved)])
    }

    /// Whether this set is `$` (RFC 5182).
    pub fn is_saved(&self) -> bool {
        self.0 == [(Bound::Saved, Bound::Saved)]
    }

    /// A set of explicit numbers, runs of consecutive ones joined into one range (`$` of a
    /// whole mailbox is then one range, however many messages it holds).
    pub fn from_numbers(numbers: &[u32]) -> SequenceSet {
        let mut ranges: Vec<(Bound, Bound)> = Vec::new();
        for &n in numbers {
            match ranges.last_mut() {
                Some((_, Bound::Num(high))) if high.checked_add(1) == Some(n) => *high = n,
                _ => ranges.push((Bound::Num(n), Bound::Num(n))),
            }
        }
        SequenceSet(ranges)
    }

    /// Whether `n` is in the set, `*` meaning `largest`.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.value(largest), b.value(largest));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            lo <= n && n <= hi
        })
    }

    /// The set as sorted, merged `(low, high)` ranges, `*` meaning `largest`: membership is
    /// then a binary search, however many ranges a client sends.
    pub fn ranges(&self, largest: u32) -> Ranges {
        let mut ranges: Vec<(u32, u32)> = self
            .0
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.value(largest), b.value(largest));
                (a.min(b), a.max(b))
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ranges(merged)
    }

    /// Whether every number of the set is at most `largest` (for message sequence numbers,
    /// where a number past the end is an error, RFC 3501 §9 `seq-number`).
    pub fn within(&self, largest: u32) -> bool {
        self.0
            .iter()
            .all(|&(a, b)| a.value(largest) <= largest && b.value(largest) <= largest)
    }
}

/// Sorted, disjoint ranges (see [`SequenceSet::ranges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    pub fn contains(&self, n: u32) -> bool {
        let i = self.0.partition_point(|&(lo, _)| lo <= n);
        i > 0 && self.0[i - 1].1 >= n
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The numbers of these ranges within `low..=high` that are not in `present` (ascending):
    /// the gaps, as ranges, without listing every number of a large set.
    pub fn gaps(&self, low: u32, high: u32, present: &[u32]) -> Ranges {
        let mut out = Vec::new();
        for &(lo, hi) in &self.0 {
            let (mut lo, hi) = (lo.max(low), hi.min(high));
            if lo > hi {
                continue;
            }
            let start = present.partition_point(|&p| p < lo);
            for &p in present[start..].iter().take_while(|&&p| p <= hi) {
                if p > lo {
                    out.push((lo, p - 1));
                }
                lo = p.saturating_add(1);
            }
            if lo <= hi && !(lo == u32::MAX && present.last() == Some(&u32::MAX)) {
                out.push((lo, hi));
            }
        }
        Ranges(out)
    }

    /// Only the numbers of these ranges that are also in `numbers` (ascending).
    pub fn keep(&self, numbers: &[u32]) -> Vec<u32> {
        numbers.iter().copied().filter(|&n| self.contains(n)).collect()
    }
}

/// Sequence-set form (`1:3,7`), as VANISHED writes it (RFC 7162 §3.2.10).
impl std::fmt::Display for Ranges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}:{hi}")?;
            }
        }
        Ok(())
    }
}

/// Write numbers as a compact set (`1:3,7`), for COPYUID and APPENDUID (RFC 4315).
pub fn compact(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = numbers[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_star() {
        let set = SequenceSet::parse(b"1:3,7,9:*").unwrap();
        assert!(set.contains(2, 20));
        assert!(!set.contains(5, 20));
        assert!(set.contains(20, 20));
        // n:* with n past the end still names the last message (RFC 3501 §6.4.8).
        let set = SequenceSet::parse(b"50:*").unwrap();
        assert!(set.contains(20, 20));
        assert!(!set.contains(19, 20));
        assert!(SequenceSet::parse(b"0").is_none());
        assert!(SequenceSet::parse(b"1,,2").is_none());
        assert!(SequenceSet::parse(b"").is_none());
        assert!(SequenceSet::parse(b"$").is_some_and(|s| s.is_saved()));
        assert!(SequenceSet::parse(b"$,1").is_none());
        assert!(SequenceSet::parse(b"1:$").is_none());
        assert!(!SequenceSet::saved().contains(1, 5));
        let joined = SequenceSet::from_numbers(&[1, 2, 3, 7, 8, 5]);
        assert_eq!(joined.0.len(), 3);
        assert!(joined.contains(2, 9) && joined.contains(5, 9) && !joined.contains(4, 9));
        let ranges = SequenceSet::parse(b"9:*,1,3:4,2").unwrap().ranges(20);
        assert_eq!(ranges, Ranges(vec![(1, 4), (9, 20)]));
        assert!(ranges.contains(1) && ranges.contains(4) && ranges.contains(15));
        assert!(!ranges.contains(5) && !ranges.contains(21) && !ranges.contains(0));
    }

    #[test]
    fn gaps_between_present_numbers() {
        let ranges = SequenceSet::parse(b"1:10,20:*").unwrap().ranges(30);
        let gaps = ranges.gaps(1, 25, &[2, 3, 7, 10, 21, 25, 28]);
        assert_eq!(gaps.to_string(), "1,4:6,8:9,20,22:24");
        assert!(ranges.gaps(1, 0, &[]).is_empty());
        assert_eq!(ranges.gaps(5, 8, &[]).to_string(), "5:8");
        assert_eq!(ranges.keep(&[1, 11, 20, 31]), vec![1, 20]);
    }

    #[test]
    fn compact_sets() {
        assert_eq!(compact(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(compact(&[5]), "5");
        assert_eq!(compact(&[]), "");
    }
}
