"""The ORT side: decode, run the merged graph, decide the verdict, read model directories.

Never imports torch or scikit-learn: the serving process lives on this package.
"""
