"""The deploy stage: ``bundle`` models for a device, ``verify`` a bundle there, ``predict`` on
images and video. Nothing here imports torch unless a PyTorch checkpoint is asked for.
"""
