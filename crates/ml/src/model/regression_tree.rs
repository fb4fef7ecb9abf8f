//! CART regression trees: each split is the one that most reduces the squared error, a leaf
//! predicts the mean of the training targets reaching it. linfa-trees grows classification
//! trees only; this writes the same flat node list Galley's tree scorer walks.

use super::Node;

/// How a regression tree may grow (the blueprint's `max_depth`, `min_samples_split`,
/// `min_samples_leaf`, with scikit-learn's defaults: unlimited depth, 2, 1).
pub(super) struct Growth {
    pub max_depth: Option<usize>,
    pub min_split: usize,
    pub min_leaf: usize,
}

/// Nodes in pre-order, node 0 the root; a row goes left when `x[feature] < threshold`.
pub(super) fn fit(x: &[Vec<f64>], y: &[f64], growth: &Growth) -> Vec<Node> {
    let mut nodes = Vec::new();
    let rows: Vec<usize> = (0..y.len()).collect();
    grow(x, y, rows, 0, growth, &mut nodes);
    nodes
}

fn grow(x: &[Vec<f64>], y: &[f64], rows: Vec<usize>, depth: usize, g: &Growth, nodes: &mut Vec<Node>) -> usize {
    let me = nodes.len();
    let n = rows.len() as f64;
    let mean = rows.iter().map(|&r| y[r]).sum::<f64>() / n.max(1.0);
    nodes.push(Node::Leaf { value: mean });
    let deep_enough = g.max_depth.is_some_and(|d| depth >= d);
    if deep_enough || rows.len() < g.min_split.max(2) {
        return me;
    }
    let Some((feature, threshold)) = best_split(x, y, &rows, g.min_leaf.max(1)) else {
        return me;
    };
    let (left, right): (Vec<usize>, Vec<usize>) = rows.into_iter().partition(|&r| x[r][feature] < threshold);
    let left = grow(x, y, left, depth + 1, g, nodes);
    let right = grow(x, y, right, depth + 1, g, nodes);
    nodes[me] = Node::Split { feature, threshold, left, right };
    me
}

/// The split with the least total squared error over both sides, if any lowers the node's
/// own; thresholds sit halfway between neighbouring distinct values.
fn best_split(x: &[Vec<f64>], y: &[f64], rows: &[usize], min_leaf: usize) -> Option<(usize, f64)> {
    let n = rows.len();
    let (sum, sumsq) = rows.iter().fold((0.0, 0.0), |(s, q), &r| (s + y[r], q + y[r] * y[r]));
    let parent = sumsq - sum * sum / n as f64;
    let mut best: Option<(f64, usize, f64)> = None;
    let mut order = rows.to_vec();
    let width = x.first().map_or(0, Vec::len);
    // `f` names a column across rows, which no iterator over `x` gives directly.
    #[allow(clippy::needless_range_loop)]
    for f in 0..width {
        order.sort_by(|&a, &b| x[a][f].total_cmp(&x[b][f]));
        let (mut ls, mut lq) = (0.0, 0.0);
        for i in 1..n {
            let prev = order[i - 1];
            ls += y[prev];
            lq += y[prev] * y[prev];
            let (lo, hi) = (x[prev][f], x[order[i]][f]);
            if i < min_leaf || n - i < min_leaf || lo == hi {
                continue;
            }
            let (nl, nr) = (i as f64, (n - i) as f64);
            let (rs, rq) = (sum - ls, sumsq - lq);
            let sse = (lq - ls * ls / nl) + (rq - rs * rs / nr);
            if best.is_none_or(|(b, _, _)| sse < b) {
                best = Some((sse, f, lo + (hi - lo) / 2.0));
            }
        }
    }
    // A split that does not lower the error (a constant target) would only add nodes.
    best.filter(|(sse, _, _)| *sse < parent - 1e-12 * parent.abs().max(1.0)).map(|(_, f, t)| (f, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(nodes: &[Node], x: &[f64]) -> f64 {
        match &nodes[super::super::find_leaf(nodes, x)] {
            Node::Leaf { value } => *value,
            Node::Split { .. } => unreachable!(),
        }
    }

    #[test]
    fn a_step_is_found_exactly_and_leaves_are_means() {
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 0.0]).collect();
        let y: Vec<f64> = (0..10).map(|i| if i < 4 { 5.0 + (i % 2) as f64 } else { -2.0 }).collect();
        let nodes = fit(&x, &y, &Growth { max_depth: Some(1), min_split: 2, min_leaf: 1 });
        assert_eq!(nodes.len(), 3);
        assert!(matches!(nodes[0], Node::Split { feature: 0, threshold, .. } if threshold == 3.5));
        assert_eq!(leaf(&nodes, &[1.0, 0.0]), 5.5);
        assert_eq!(leaf(&nodes, &[8.0, 0.0]), -2.0);
    }

    #[test]
    fn growth_limits_hold() {
        let x: Vec<Vec<f64>> = (0..64).map(|i| vec![i as f64]).collect();
        let y: Vec<f64> = (0..64).map(|i| (i * i) as f64).collect();
        let full = fit(&x, &y, &Growth { max_depth: None, min_split: 2, min_leaf: 1 });
        assert_eq!(full.iter().filter(|n| matches!(n, Node::Leaf { .. })).count(), 64, "unlimited: one leaf per distinct row");
        let shallow = fit(&x, &y, &Growth { max_depth: Some(2), min_split: 2, min_leaf: 1 });
        assert_eq!(shallow.iter().filter(|n| matches!(n, Node::Leaf { .. })).count(), 4);
        let wide = fit(&x, &y, &Growth { max_depth: None, min_split: 2, min_leaf: 20 });
        assert!(wide.iter().filter(|n| matches!(n, Node::Leaf { .. })).count() <= 3);
        let constant = fit(&x, &vec![1.0; 64], &Growth { max_depth: None, min_split: 2, min_leaf: 1 });
        assert_eq!(constant.len(), 1, "a constant target is one leaf");
    }
}
