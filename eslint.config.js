// Lint rules: typescript-eslint's recommended set with type information, plus the
// purity rules that keep consensus/ free of I/O, clocks and randomness (STYLE.md §1).
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['node_modules/**', 'bin/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    files: ['consensus/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: ['node:*', 'libp2p', '@libp2p/*', '../storage/*', '../node/*', '../sim/*'] },
      ],
      'no-restricted-globals': [
        'error',
        'setTimeout',
        'setInterval',
        'setImmediate',
        'performance',
        'process',
        'queueMicrotask',
      ],
      'no-restricted-properties': [
        'error',
        {
          object: 'Date',
          property: 'now',
          message: 'consensus/ has no clock: time enters through tick()',
        },
        {
          object: 'Math',
          property: 'random',
          message: 'consensus/ takes randomness from the injected Random',
        },
      ],
      'no-restricted-syntax': [
        'error',
        { selector: 'AwaitExpression', message: 'consensus/ never awaits' },
        { selector: 'NewExpression[callee.name="Date"]', message: 'consensus/ has no clock' },
      ],
    },
  },
)
