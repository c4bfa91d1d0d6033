/** latentdem: the EM framework and its tasks. */
export {};
