"""The torch side's model definition: MCUNet-in3, the trunk/tail split, export, MACs.

Everything here imports torch; the serving process never imports this package.
"""
