"""The torch side's training: the loop (loop.py), continual learning with replay
(continual.py), the model bundle that trains and saves (bundle.py), and the one recipe
every caller uses to learn a product (recipe.py). Runs in the worker, never in the API."""
