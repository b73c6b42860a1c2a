"""corral.compiler"""
