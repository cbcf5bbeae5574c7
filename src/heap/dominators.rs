//! Dominators of the object graph and retained sizes: an object's retained size is what
//! would be freed if it went, i.e. itself and every object only reachable through it (Eclipse
//! MAT's and Chrome's definition). The iterative algorithm of Cooper, Harvey and Kennedy
//! ("A Simple, Fast Dominance Algorithm") over a reverse postorder; it knows graphs of `u32`
//! nodes and nothing of Python.

use super::walker::NO_NODE;

/// The dominator tree from node 0, and each node's retained bytes and objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dominators {
    /// Each node's immediate dominator ([`NO_NODE`] for the root and unreachable nodes).
    pub idom: Vec<u32>,
    /// Each node's retained bytes (0 when unreachable from node 0).
    pub retained_bytes: Vec<u64>,
    /// Each node's retained object count.
    pub retained_objects: Vec<u64>,
}

/// Compressed adjacency lists.
struct Adjacency {
    start: Vec<usize>,
    targets: Vec<u32>,
}

impl Adjacency {
    fn new(n: usize, edges: impl Iterator<Item = (u32, u32)> + Clone) -> Self {
        let mut start = vec![0usize; n + 1];
        for (from, _) in edges.clone() {
            start[from as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut targets = vec![0u32; start[n]];
        for (from, to) in edges {
            targets[fill[from as usize]] = to;
            fill[from as usize] += 1;
        }
        Adjacency { start, targets }
    }

    fn of(&self, node: u32) -> &[u32] {
        &self.targets[self.start[node as usize]..self.start[node as usize + 1]]
    }
}

/// Dominators of the graph of `n` nodes and `edges` from node 0; `shallow` gives each node's
/// own bytes.
pub fn dominators(n: usize, edges: &[(u32, u32)], shallow: &[u64]) -> Dominators {
    let succ = Adjacency::new(n, edges.iter().copied());
    let pred = Adjacency::new(n, edges.iter().map(|&(a, b)| (b, a)));
    // Postorder numbers by an iterative depth-first search.
    let mut post = vec![NO_NODE; n];
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    let mut stack: Vec<(u32, usize)> = vec![(0, 0)];
    visited[0] = true;
    while let Some((node, next)) = stack.last_mut() {
        let children = succ.of(*node);
        if let Some(&child) = children.get(*next) {
            *next += 1;
            if !visited[child as usize] {
                visited[child as usize] = true;
                stack.push((child, 0));
            }
        } else {
            post[*node as usize] = order.len() as u32;
            order.push(*node);
            stack.pop();
        }
    }
    let mut idom = vec![NO_NODE; n];
    idom[0] = 0;
    let mut changed = true;
    while changed {
        changed = false;
        for &node in order.iter().rev().skip(1) {
            let mut new = NO_NODE;
            for &p in pred.of(node) {
                if idom[p as usize] == NO_NODE {
                    continue;
                }
                new = if new == NO_NODE {
                    p
                } else {
                    intersect(&idom, &post, p, new)
                };
            }
            if new != NO_NODE && idom[node as usize] != new {
                idom[node as usize] = new;
                changed = true;
            }
        }
    }
    idom[0] = NO_NODE;
    let mut retained_bytes = vec![0u64; n];
    let mut retained_objects = vec![0u64; n];
    for &node in &order {
        retained_bytes[node as usize] += shallow[node as usize];
        retained_objects[node as usize] += u64::from(node != 0);
        let up = idom[node as usize];
        if up != NO_NODE {
            retained_bytes[up as usize] += retained_bytes[node as usize];
            retained_objects[up as usize] += retained_objects[node as usize];
        }
    }
    Dominators {
        idom,
        retained_bytes,
        retained_objects,
    }
}

fn intersect(idom: &[u32], post: &[u32], mut a: u32, mut b: u32) -> u32 {
    while a != b {
        while post[a as usize] < post[b as usize] {
            a = idom[a as usize];
        }
        while post[b as usize] < post[a as usize] {
            b = idom[b as usize];
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_object_is_retained_by_the_common_dominator_only() {
        // 0 -> 1 -> {2, 3}; 2 -> 4; 3 -> 4; 0 -> 5 (5 unrelated); 6 unreachable.
        let edges = [(0, 1), (1, 2), (1, 3), (2, 4), (3, 4), (0, 5)];
        let shallow = [0, 10, 20, 30, 40, 50, 60];
        let d = dominators(7, &edges, &shallow);
        assert_eq!(d.idom[4], 1);
        assert_eq!(d.idom[2], 1);
        assert_eq!(d.retained_bytes[2], 20);
        assert_eq!(d.retained_bytes[1], 10 + 20 + 30 + 40);
        assert_eq!(d.retained_objects[1], 4);
        assert_eq!(d.retained_bytes[0], 150);
        assert_eq!(d.retained_bytes[6], 0);
        assert_eq!(d.idom[6], NO_NODE);
    }

    #[test]
    fn cycles_converge() {
        // 0 -> 1 -> 2 -> 3 -> 1, 0 -> 3.
        let edges = [(0, 1), (1, 2), (2, 3), (3, 1), (0, 3)];
        let d = dominators(4, &edges, &[0, 1, 1, 1]);
        assert_eq!(d.idom[1], 0);
        assert_eq!(d.idom[3], 0);
        assert_eq!(d.idom[2], 1);
    }
}
