"""k-means (faiss | scikit-learn) and SHED's proxies (the member nearest each centroid)."""

from shedkit.cluster.kmeans import KMeans, assign_nearest, default_num_clusters, resolve_backend
from shedkit.cluster.proxies import proxy_indices, squared_distances_to_centers
from shedkit.cluster.stage import ClusteringResult, cluster_embeddings, cluster_records

__all__ = [
    "ClusteringResult",
    "KMeans",
    "assign_nearest",
    "cluster_embeddings",
    "cluster_records",
    "default_num_clusters",
    "proxy_indices",
    "resolve_backend",
    "squared_distances_to_centers",
]
