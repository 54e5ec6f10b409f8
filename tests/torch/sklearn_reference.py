#!/usr/bin/python3
"""Reference values for tests/torch/classic_ml_test.cpp, computed by
scikit-learn (Debian's python3-sklearn) when the test runs. Writes JSON to
the path given: the data sets (generated here from fixed seeds) and what
StandardScaler, TfidfVectorizer, LogisticRegression and KMeans make of them.
"""
import json
import sys

import numpy as np
import sklearn
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def main():
    rng = np.random.default_rng(42)
    out = {"sklearn": sklearn.__version__}

    # Scaling: different means and spreads per column, one constant column.
    x = rng.normal(loc=[1.0, -5.0, 100.0, 3.0], scale=[0.5, 2.0, 30.0, 0.0], size=(50, 4))
    x = x.astype(np.float32)
    s = StandardScaler().fit(x)
    out["scaler"] = {"x": x.tolist(), "mean": s.mean_.tolist(), "scale": s.scale_.tolist(),
                     "transformed": s.transform(x).tolist()}

    # TF-IDF on issue-tracker text with Unicode words, case and punctuation.
    docs = [
        "Crash on start: the parser fails on UTF-8 input (café, naïve).",
        "Add dark mode to the settings page; users asked for it twice.",
        "The parser crashes when the config file is empty.",
        "Dark mode: contrast too low on the settings page",
        "Zürich office: VPN drops every hour, retry logic needed",
        "a b c x1 _id __init__ ΣΟΦΙΑ σοφία 42 4 über Über",
    ]
    v = TfidfVectorizer().fit(docs)
    out["tfidf"] = {"docs": docs, "vocabulary": v.get_feature_names_out().tolist(),
                    "idf": v.idf_.tolist(), "matrix": v.transform(docs).toarray().tolist(),
                    "unseen": ["the parser and the dark mode", "nothing known here"],
                    "unseen_matrix": v.transform(["the parser and the dark mode",
                                                  "nothing known here"]).toarray().tolist()}

    # Logistic regression, two and three classes, converged tightly.
    for name, k in (("logistic_binary", 2), ("logistic_multi", 3)):
        centers = rng.normal(scale=2.0, size=(k, 3))
        y = rng.integers(0, k, size=120)
        xs = (centers[y] + rng.normal(size=(120, 3))).astype(np.float32)
        labels = (y * 10 + 7).astype(np.int64)  # class values need not be 0..k-1
        m = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(xs, labels)
        probe = xs[:10]
        out[name] = {"x": xs.tolist(), "y": labels.tolist(), "c": 0.5,
                     "coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(),
                     "classes": m.classes_.tolist(),
                     "proba": m.predict_proba(probe).tolist(),
                     "predict": m.predict(xs).tolist()}

    # k-means with given initial centres (k-means++ draws differ by RNG).
    blobs = np.concatenate([rng.normal(loc=c, scale=0.8, size=(40, 2))
                            for c in ([0, 0], [5, 5], [0, 6])]).astype(np.float32)
    init = blobs[[0, 40, 80]] + np.float32(0.5)
    km = KMeans(n_clusters=3, init=init, n_init=1, algorithm="lloyd").fit(blobs)
    out["kmeans"] = {"x": blobs.tolist(), "init": init.tolist(),
                     "centers": km.cluster_centers_.tolist(), "labels": km.labels_.tolist(),
                     "inertia": float(km.inertia_)}
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
