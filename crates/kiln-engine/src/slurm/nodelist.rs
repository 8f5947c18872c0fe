//! Slurm's compressed node lists (`node[1-3,7]`, `gpu[01-02],cpu5`, `rack[1-2]n[1-2]`) expanded to
//! node names in Slurm's order, which is the order tasks are laid out on the nodes (task `i` of a
//! one-task-per-node step runs on the `i`-th node).

/// Expands a node list. An empty list gives no nodes; a malformed one is an error naming it.
pub fn expand(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top_level(list) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        expand_item(item, &mut out).map_err(|why| format!("node list '{list}' cannot be read: {why}"))?;
    }
    Ok(out)
}

/// Splits at commas outside brackets.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
}

/// Expands one name with any number of bracketed ranges (their product, leftmost varying slowest).
fn expand_item(item: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = item.find('[') else {
        if item.contains(']') {
            return Err(format!("'{item}' has ']' without '['"));
        }
        out.push(item.to_string());
        return Ok(());
    };
    let close = item[open..]
        .find(']')
        .map(|c| open + c)
        .ok_or_else(|| format!("'{item}' has '[' without ']'"))?;
    let (prefix, ranges, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    let mut tails = Vec::new();
    expand_item(&format!("x{rest}"), &mut tails)?;
    for number in expand_ranges(ranges)? {
        for tail in &tails {
            out.push(format!("{prefix}{number}{}", &tail[1..]));
        }
    }
    Ok(())
}

/// `1-3,07` → `1 2 3 07`; a range keeps the width of its lower bound (`01-10` → `01` … `10`).
fn expand_ranges(ranges: &str) -> Result<Vec<String>, String> {
    /// More names than any cluster has: a typo such as `1-99999999` must not exhaust memory.
    const MOST: u64 = 1_000_000;
    let mut out = Vec::new();
    for range in ranges.split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("'{range}' is not a number or a range of numbers"))
        };
        let (from, to) = (number(lo)?, number(hi)?);
        if to < from || to - from >= MOST || out.len() as u64 + (to - from) >= MOST {
            return Err(format!("range '{range}' is empty or too large"));
        }
        let width = lo.len();
        out.extend((from..=to).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn names(list: &str) -> Vec<String> {
        expand(list).unwrap()
    }

    #[test]
    fn single_names_and_plain_lists() {
        assert_eq!(names("node1"), ["node1"]);
        assert_eq!(names("node1,node3"), ["node1", "node3"]);
        assert!(names("").is_empty());
        assert_eq!(names("localhost"), ["localhost"]);
    }

    #[test]
    fn ranges_keep_order_and_padding() {
        assert_eq!(names("node[1-2]"), ["node1", "node2"]);
        assert_eq!(names("node[1-3,7]"), ["node1", "node2", "node3", "node7"]);
        assert_eq!(names("gpu[08-10]"), ["gpu08", "gpu09", "gpu10"]);
        assert_eq!(
            names("gpu[01-02],cpu5,cpu[7-8]"),
            ["gpu01", "gpu02", "cpu5", "cpu7", "cpu8"]
        );
    }

    #[test]
    fn several_brackets_multiply() {
        assert_eq!(names("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(names("a[1-2]-ib"), ["a1-ib", "a2-ib"]);
    }

    #[test]
    fn malformed_lists_are_errors_naming_the_list() {
        for bad in ["node[1-2", "node1]", "node[a-b]", "node[3-1]", "node[1-99999999]"] {
            let e = expand(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
