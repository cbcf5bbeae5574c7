"""networkx: build a random graph of ~1.2M edges (gnm_random_graph), copy it, and compute on the
copy (degrees, connected components, core numbers). Everything is kept alive to the end.

    python networkx_graph.py
"""

import common

NODES = 200_000
EDGES = 1_200_000


def work():
    import networkx as nx
    kept = {}
    graph = nx.gnm_random_graph(NODES, EDGES, seed=7)
    kept["graph"] = graph
    copy = graph.copy()
    kept["copy"] = copy
    kept["degrees"] = dict(copy.degree())
    kept["components"] = [len(c) for c in nx.connected_components(copy)]
    kept["cores"] = nx.core_number(copy)
    return kept


def main():
    common.run(work, lambda kept: "networkx_graph: %d nodes, %d edges, %d components, max core %d" % (
        kept["graph"].number_of_nodes(), kept["graph"].number_of_edges(), len(kept["components"]),
        max(kept["cores"].values())))


if __name__ == "__main__":
    main()
